//! The hash chain over a tenant's audit records: what a record holds and how it is
//! hashed onto the one before it.
//!
//! A leaf: it depends on nothing else in the crate, so that the store (which appends to
//! the chain) and the audit module (which verifies it) both use it without depending on
//! each other through it.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

/// An audit record to append to its tenant's chain (and, as the store reads it back, the
/// columns it was stored in).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NewAuditRecord {
    /// The event's id; appending the same id twice appends it once.
    pub id: String,
    /// The tenant whose chain it joins.
    pub tenant_id: String,
    /// What happened.
    pub event_type: String,
    /// Who did it.
    pub user_id: String,
    /// The kind of thing it happened to.
    pub entity_type: String,
    /// Which one.
    pub entity_id: String,
    /// What changed, as JSON text.
    pub changes: String,
    /// When it happened (microsecond precision).
    pub occurred_at: DateTime<Utc>,
    /// Whether it is kept for compliance.
    pub compliance: bool,
}

/// The hash before a tenant's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of `record` at place `seq`, after a record whose hash is `prev`. Every field is
/// length-prefixed, so that no two different records hash alike by shifting text between
/// fields.
pub fn hash(prev: &[u8], seq: i64, record: &NewAuditRecord) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    let occurred_at = record
        .occurred_at
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    for field in [
        &record.id,
        &record.tenant_id,
        &record.event_type,
        &record.user_id,
        &record.entity_type,
        &record.entity_id,
        &record.changes,
        &occurred_at,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update([u8::from(record.compliance)]);
    hasher.finalize().into()
}
