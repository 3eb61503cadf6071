//! Building one email for one recipient.

use super::Rendered;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

/// The email to `to` from `from`, with a text and an HTML part. `id` makes the Message-ID,
/// which stays the same when a retry sends the message again, so that receivers can tell a
/// repeat. The builder encodes every header value, and the subject is a single line, so
/// that data cannot add a header.
pub fn build(
    id: &str,
    from: &Mailbox,
    to: Mailbox,
    rendered: &Rendered,
) -> Result<Message, lettre::error::Error> {
    let domain = from.email.domain();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .message_id(Some(format!("<{id}@{domain}>")))
        .date_now()
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
}
