//! The file outbox: each message as an `.eml` file, for running without an SMTP relay.

use super::message::Email;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use std::path::PathBuf;

/// Writes messages as `.eml` files into a directory.
#[derive(Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// An outbox in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Outbox { dir }
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Writes one message; answers the file's name.
    pub async fn write(&self, email: &Email) -> Result<String, std::io::Error> {
        tokio::fs::create_dir_all(&self.dir).await?;
        AsyncFileTransport::<Tokio1Executor>::new(&self.dir)
            .send_raw(&email.envelope, &email.bytes)
            .await
            .map(|id| format!("{id}.eml"))
            .map_err(std::io::Error::other)
    }
}
