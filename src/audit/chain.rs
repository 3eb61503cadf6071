//! The hash chain over a tenant's audit records.

use crate::store::NewAuditRecord;
use chrono::SecondsFormat;
use sha2::{Digest, Sha256};

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
