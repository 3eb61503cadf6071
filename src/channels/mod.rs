//! Delivery channels: how each kind of event reaches people.

pub mod email;
mod limits;
mod providers;
pub mod push;
pub mod tls;

pub use limits::OutboundLimit;
pub use providers::TenantProviders;

use crate::domain::{Envelope, TenantId};
use crate::store::{Store, StoreError};
use crate::workers::{DeliveryOutcome, Outcome};
use std::collections::HashMap;

/// What earlier attempts at `envelope` settled for good on `channel`, by recipient and
/// target, from the ledger: a retry carries those forward instead of sending them again.
/// A first attempt has nothing before it, unless the event may have been published more
/// than once (an idempotency key's repeat): then another copy may have been handled, and
/// what it did is looked up too.
pub async fn settled_deliveries(
    store: &dyn Store,
    envelope: &Envelope,
    attempt: u32,
    channel: &str,
) -> Result<HashMap<(String, String), DeliveryOutcome>, StoreError> {
    if attempt <= 1 && !envelope.deduplicate {
        return Ok(HashMap::new());
    }
    let tenant: &TenantId = envelope.event.tenant_id();
    let Some((_, deliveries)) = store.notification(tenant, &envelope.id.to_string()).await? else {
        return Ok(HashMap::new());
    };
    Ok(deliveries
        .into_iter()
        .filter(|d| d.channel == channel && !d.target.is_empty())
        .filter_map(|d| {
            let outcome = match d.status.as_str() {
                "delivered" => Outcome::Delivered,
                "failed" => Outcome::failed(d.last_error.unwrap_or_default()),
                _ => return None,
            };
            let key = (d.recipient.clone(), d.target.clone());
            let settled = DeliveryOutcome {
                recipient: d.recipient,
                target: d.target,
                outcome,
                attempt: d.attempts,
                reply: d.reply,
            };
            Some((key, settled))
        })
        .collect())
}
