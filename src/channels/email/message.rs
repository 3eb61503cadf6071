//! Building one email for one recipient.

use super::Rendered;
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart};

/// What every recipient's message of one event shares: the subject, and the text and HTML
/// parts, encoded once rather than once per recipient.
pub struct Content {
    subject: String,
    parts: MultiPart,
}

impl Content {
    /// The content of `rendered`.
    pub fn new(rendered: &Rendered) -> Self {
        Content {
            subject: rendered.subject.clone(),
            parts: MultiPart::alternative_plain_html(rendered.text.clone(), rendered.html.clone()),
        }
    }
}

/// The email to `to` from `from`, with a text and an HTML part. `id` makes the Message-ID,
/// which stays the same when a retry sends the message again, so that receivers can tell a
/// repeat. The builder encodes every header value, and the subject is a single line, so
/// that data cannot add a header.
pub fn build(
    id: &str,
    from: &Mailbox,
    to: Mailbox,
    content: &Content,
) -> Result<Message, lettre::error::Error> {
    let domain = from.email.domain();
    // Given, so that lettre need not derive it by parsing the headers it was just given.
    let envelope = Envelope::new(Some(from.email.clone()), vec![to.email.clone()])?;
    Message::builder()
        .envelope(envelope)
        .from(from.clone())
        .to(to)
        .subject(content.subject.clone())
        .message_id(Some(format!("<{id}@{domain}>")))
        .date_now()
        .multipart(content.parts.clone())
}
