//! Audit persistence: the audit worker appends events to each tenant's hash chain in
//! batches (one transaction per batch, idempotent on redelivery), and the chain can be
//! verified end to end.

pub mod chain;

use crate::domain::{Envelope, Event, TenantId};
use crate::grouped::{GroupWrite, Grouped};
use crate::store::{AuditStore, NewAuditRecord, StoreError};
use crate::workers::{Handler, Outcome};
use async_trait::async_trait;
use chrono::SubsecRound;
use serde::Serialize;
use std::sync::Arc;

/// Most records one transaction takes.
const BATCH: usize = 1000;

/// Appends a batch of records to their chains in one transaction.
struct Appender(Arc<dyn AuditStore>);

impl GroupWrite for Appender {
    type Item = NewAuditRecord;
    type Outcome = ();

    async fn write(
        &mut self,
        records: &[NewAuditRecord],
    ) -> Result<Vec<Result<(), String>>, String> {
        match self.0.append_audit(records).await {
            Ok(_) => Ok(vec![Ok(()); records.len()]),
            Err(e) => {
                tracing::error!(error = %e, records = records.len(), "appending audit records failed");
                Err(e.to_string())
            }
        }
    }
}

/// The audit queue's handler: hands each event to a batching writer and reports its commit.
#[derive(Clone)]
pub struct AuditHandler {
    appends: Grouped<Appender>,
}

impl AuditHandler {
    /// Starts the batching writer on `store`.
    pub fn start(store: Arc<dyn AuditStore>) -> Self {
        AuditHandler {
            appends: Grouped::start(Appender(store), BATCH, 4 * BATCH),
        }
    }
}

/// The record an audit event becomes.
pub fn record_of(envelope: &Envelope) -> Option<NewAuditRecord> {
    let Event::Audit(event) = &envelope.event else {
        return None;
    };
    Some(NewAuditRecord {
        id: envelope.id.to_string(),
        tenant_id: event.tenant_id.as_str().to_owned(),
        event_type: event.event_type.clone(),
        user_id: event.user_id.to_string(),
        entity_type: event.entity_type.clone(),
        entity_id: event.entity_id.to_string(),
        changes: serde_json::to_string(&event.changes).expect("a JSON object serializes"),
        occurred_at: event.timestamp.trunc_subsecs(6),
        compliance: event.compliance,
    })
}

#[async_trait]
impl Handler for AuditHandler {
    async fn handle(&self, envelope: &Envelope, _attempt: u32) -> Outcome {
        let Some(record) = record_of(envelope) else {
            return Outcome::failed("not an audit event");
        };
        match self.appends.write(record).await {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::retry(e),
        }
    }
}

/// The result of checking a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Whether every record's hashes check out.
    pub intact: bool,
    /// How many records were checked.
    pub records: u64,
    /// The place (seq) of the first record that does not check out.
    pub broken_at: Option<i64>,
    /// Why it does not.
    pub reason: Option<String>,
}

/// Walks a tenant's chain from its first stored record, recomputing every hash.
pub async fn verify(store: &dyn AuditStore, tenant: &TenantId) -> Result<Verification, StoreError> {
    let mut checked = 0;
    let mut previous: Option<(i64, Vec<u8>)> = None;
    loop {
        let after = previous.as_ref().map_or(0, |(seq, _)| *seq);
        let page = store.audit_chain(tenant, after, 1000).await?;
        if page.is_empty() {
            return Ok(Verification {
                intact: true,
                records: checked,
                broken_at: None,
                reason: None,
            });
        }
        for stored in page {
            let broken = |reason: &str| Verification {
                intact: false,
                records: checked,
                broken_at: Some(stored.seq),
                reason: Some(reason.to_owned()),
            };
            if let Some((seq, hash)) = &previous {
                if stored.seq != seq + 1 {
                    return Ok(broken("a record before this one is missing"));
                }
                if &stored.prev_hash != hash {
                    return Ok(broken("it does not carry the hash of the record before it"));
                }
            }
            if chain::hash(&stored.prev_hash, stored.seq, &stored.record)[..] != stored.hash[..] {
                return Ok(broken("its contents do not match its hash"));
            }
            checked += 1;
            previous = Some((stored.seq, stored.hash));
        }
    }
}
