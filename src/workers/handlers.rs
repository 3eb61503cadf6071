//! The handlers of each queue. Until the channel workers (email, push, real time, audit)
//! replace them, each handler records that it saw the event and acknowledges it.

use super::{Handler, Outcome};
use crate::domain::Envelope;
use async_trait::async_trait;

/// Logs each event and acknowledges it.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogHandler;

#[async_trait]
impl Handler for LogHandler {
    async fn handle(&self, envelope: &Envelope, attempt: u32) -> Outcome {
        tracing::info!(
            id = %envelope.id,
            tenant = %envelope.event.tenant_id(),
            kind = envelope.event.kind().as_str(),
            attempt,
            "event received"
        );
        Outcome::Delivered
    }
}
