//! The file outbox: each message as an `.eml` file, for running without an SMTP relay.

use super::Rendered;
use crate::domain::EmailAddress;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The message could not be built (a bad address or header).
    #[error("building the message: {0}")]
    Build(String),
    /// The file could not be written.
    #[error("writing to the outbox: {0}")]
    Write(String),
}

/// Writes messages as `.eml` files into a directory.
#[derive(Clone)]
pub struct Outbox {
    dir: PathBuf,
    from: Mailbox,
}

impl Outbox {
    /// An outbox in `dir`, sending from `from` unless an event says otherwise.
    pub fn new(dir: PathBuf, from: Mailbox) -> Self {
        Outbox { dir, from }
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Writes one message to one recipient.
    pub async fn write(
        &self,
        message_id: &str,
        from: Option<&EmailAddress>,
        to: &EmailAddress,
        rendered: &Rendered,
    ) -> Result<(), OutboxError> {
        let build = |e: &dyn std::fmt::Display| OutboxError::Build(e.to_string());
        let from = match from {
            Some(address) => address.as_str().parse::<Mailbox>().map_err(|e| build(&e))?,
            None => self.from.clone(),
        };
        let to = to.as_str().parse::<Mailbox>().map_err(|e| build(&e))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(rendered.subject.clone())
            .message_id(Some(format!("<{message_id}@herald>")))
            .date_now()
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone(),
            ))
            .map_err(|e| build(&e))?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| OutboxError::Write(e.to_string()))?;
        AsyncFileTransport::<Tokio1Executor>::new(&self.dir)
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| OutboxError::Write(e.to_string()))
    }
}
