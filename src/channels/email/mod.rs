//! Email: render the template, then send one message per recipient. Until an SMTP relay
//! is configured (the email issue brings the SMTP workers), messages go to the outbox:
//! `.eml` files under `data/outbox/`.

mod outbox;
mod templates;

pub use outbox::Outbox;
pub use templates::{RenderError, Rendered, Templates};

use crate::domain::{Envelope, Event};
use crate::workers::{Handler, Outcome};
use async_trait::async_trait;

/// The email queue's handler.
pub struct EmailHandler {
    templates: Templates,
    outbox: Outbox,
}

impl EmailHandler {
    /// Renders built-in templates and writes to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        EmailHandler {
            templates: Templates::built_in(),
            outbox,
        }
    }
}

#[async_trait]
impl Handler for EmailHandler {
    async fn handle(&self, envelope: &Envelope, _attempt: u32) -> Outcome {
        let Event::Email(email) = &envelope.event else {
            return Outcome::failed(format!("not an email event: {:?}", envelope.event.kind()));
        };
        let mut rendered = match self.templates.render(email.template.as_str(), &email.data) {
            Ok(rendered) => rendered,
            // The same data renders the same way every time: retrying cannot help.
            Err(e) => return Outcome::failed(e),
        };
        if let Some(subject) = &email.subject {
            rendered.subject.clone_from(subject);
        }
        for (index, to) in email.to.as_slice().iter().enumerate() {
            let message_id = format!("{}.{index}", envelope.id);
            if let Err(e) = self
                .outbox
                .write(&message_id, email.from.as_ref(), to, &rendered)
                .await
            {
                return Outcome::retry(e);
            }
        }
        Outcome::Delivered
    }
}
