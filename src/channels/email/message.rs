//! Building one email for one recipient.
//!
//! What every recipient of an event shares (the subject, and the text and HTML parts with
//! their MIME encoding) is formatted once per event; a recipient's message is then its own
//! four headers in front of those bytes. lettre encodes every header and part; its message
//! builder is not used per recipient because it parses back each address header it is
//! given and copies the parts into every message, work that grows with the recipients.

use crate::templates::Rendered;
use lettre::Address;
use lettre::address::Envelope;
use lettre::message::header::{self, ContentTransferEncoding, ContentType, Headers};
use lettre::message::{Body, Mailbox, Mailboxes, MultiPart, SinglePart};

/// What every recipient's message of one event shares, formatted.
pub struct Content {
    /// The Subject and MIME-Version headers, then the multipart's own headers, the blank
    /// line and its body: the tail of every recipient's message.
    shared: Vec<u8>,
}

impl Content {
    /// The content of `rendered`.
    pub fn new(rendered: &Rendered) -> Self {
        let mut headers = Headers::with_capacity(2);
        // Encoded by lettre: a line break that data put in the subject cannot add a header.
        headers.set(header::Subject::from(rendered.subject.clone()));
        headers.set(header::MIME_VERSION_1_0);
        let parts = MultiPart::alternative()
            .singlepart(part(ContentType::TEXT_PLAIN, &rendered.text))
            .singlepart(part(ContentType::TEXT_HTML, &rendered.html));
        let mut shared = headers.to_string().into_bytes();
        shared.extend_from_slice(&parts.formatted());
        Content { shared }
    }
}

/// A text or HTML part. ASCII whose lines stay within RFC 5322's 998 octets goes as it
/// is (7bit): lettre would quoted-printable-encode any line over 76 octets, which HTML
/// layouts have, and normalize line ends by inserting into the string one CR at a time.
/// Anything else is left to lettre (quoted-printable or base64).
fn part(content_type: ContentType, text: &str) -> SinglePart {
    let body = match seven_bit(text) {
        Some(lines) => Body::dangerous_pre_encoded(lines, ContentTransferEncoding::SevenBit),
        None => Body::new(text.to_owned()),
    };
    SinglePart::builder().header(content_type).body(body)
}

/// `text` with CRLF line ends, if it can go as 7bit: ASCII, without NUL or a CR that ends
/// no line, in lines of at most 998 octets.
fn seven_bit(text: &str) -> Option<Vec<u8>> {
    if !text.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 16);
    for piece in text.split_inclusive('\n') {
        let (line, ended) = match piece.strip_suffix('\n') {
            Some(line) => (line.strip_suffix('\r').unwrap_or(line), true),
            None => (piece, false),
        };
        if line.len() > 998 || line.bytes().any(|b| b == b'\0' || b == b'\r') {
            return None;
        }
        out.extend_from_slice(line.as_bytes());
        if ended {
            out.extend_from_slice(b"\r\n");
        }
    }
    Some(out)
}

/// One recipient's message, as it goes on the wire.
pub struct Email {
    /// The SMTP envelope: the sender and the one recipient.
    pub envelope: Envelope,
    /// The message, headers and body, with CRLF line ends.
    pub bytes: Vec<u8>,
}

impl Email {
    /// The envelope sender, as MAIL FROM gives it.
    pub fn from(&self) -> String {
        self.envelope
            .from()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// The envelope recipient, as RCPT TO gives it.
    pub fn to(&self) -> String {
        self.envelope
            .to()
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// The email to `to` from `from`. `id` makes the Message-ID, which stays the same when a
/// retry sends the message again, so that receivers can tell a repeat.
pub fn build(id: &str, from: &Mailbox, to: &str, content: &Content) -> Result<Email, String> {
    let to: Address = to.parse().map_err(|e| format!("{to}: {e}"))?;
    let envelope =
        Envelope::new(Some(from.email.clone()), vec![to.clone()]).map_err(|e| e.to_string())?;
    let mut headers = Headers::with_capacity(4);
    headers.set(header::From::from(Mailboxes::from(from.clone())));
    headers.set(header::To::from(Mailboxes::from(Mailbox::new(None, to))));
    headers.set(header::MessageId::from(format!(
        "<{id}@{}>",
        from.email.domain()
    )));
    headers.set(header::Date::now());
    let mut bytes = Vec::with_capacity(content.shared.len() + 256);
    bytes.extend_from_slice(headers.to_string().as_bytes());
    bytes.extend_from_slice(&content.shared);
    Ok(Email { envelope, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(subject: &str) -> Rendered {
        Rendered {
            subject: subject.to_owned(),
            html: "<p>Hello</p>".to_owned(),
            text: "Hello".to_owned(),
        }
    }

    /// The message to ada@example.com with `subject`, as text.
    fn message_with(subject: &str) -> String {
        let content = Content::new(&rendered(subject));
        let from: Mailbox = "Herald <no-reply@herald.example>".parse().unwrap();
        let email = build("abc.0", &from, "ada@example.com", &content).unwrap();
        assert_eq!(email.envelope.to().len(), 1);
        String::from_utf8(email.bytes).unwrap()
    }

    #[test]
    fn a_message_is_its_headers_then_the_shared_multipart() {
        let text = message_with("Hi Ada");
        let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
        let names: Vec<&str> = head
            .split("\r\n")
            // A folded line goes on with white space: it names no header.
            .filter(|line| !line.starts_with([' ', '\t']))
            .map(|line| line.split_once(": ").unwrap().0)
            .collect();
        assert_eq!(
            names,
            [
                "From",
                "To",
                "Message-ID",
                "Date",
                "Subject",
                "MIME-Version",
                "Content-Type"
            ]
        );
        assert!(head.contains("From: Herald <no-reply@herald.example>\r\n"));
        assert!(head.contains("To: ada@example.com\r\n"));
        assert!(head.contains("Message-ID: <abc.0@herald.example>\r\n"));
        assert!(
            head.contains("Content-Type: multipart/alternative;") && head.contains("boundary=")
        );
        assert!(body.contains("Content-Type: text/plain") && body.contains("Hello"));
        assert!(body.contains("Content-Type: text/html") && body.contains("<p>Hello</p>"));
    }

    #[test]
    fn ascii_in_short_enough_lines_goes_as_it_is_with_crlf() {
        let long = "x".repeat(300);
        assert_eq!(
            seven_bit(&format!("a\n{long}\r\nb")).unwrap(),
            format!("a\r\n{long}\r\nb").into_bytes()
        );
        assert_eq!(seven_bit("a\n\n").unwrap(), b"a\r\n\r\n");
        assert_eq!(seven_bit("prêt"), None, "8-bit text is encoded");
        assert_eq!(seven_bit(&"x".repeat(999)), None, "a line over 998 octets");
        assert_eq!(seven_bit("a\rb"), None, "a CR that ends no line");
        let text = message_with("Hi");
        assert!(text.contains("Content-Transfer-Encoding: 7bit\r\n\r\n<p>Hello</p>\r\n"));
    }

    #[test]
    fn a_line_break_in_the_subject_adds_no_header() {
        let text = message_with("Hi\r\nBcc: eve@evil.example");
        let head = text.split_once("\r\n\r\n").unwrap().0;
        assert!(
            !head.split("\r\n").any(|line| line.starts_with("Bcc:")),
            "{head}"
        );
    }

    #[test]
    fn an_address_that_does_not_parse_is_refused() {
        let content = Content::new(&rendered("Hi"));
        let from: Mailbox = "no-reply@herald.example".parse().unwrap();
        assert!(build("abc.0", &from, "not an address", &content).is_err());
    }
}
