//! The retention job: removes audit records, ledger entries, idempotency keys and users'
//! real-time events past their configured age. Deletes are idempotent, so every instance may run it.

use crate::idempotency;
use crate::shutdown::Shutdown;
use crate::store::{AuditStore, EventLogStore, IdempotencyStore, LedgerStore, StoreError};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

/// How long stored data is kept, as configured (`retention.*`).
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Audit records older than this are removed.
    pub audit: Duration,
    /// Delivery-ledger entries older than this are removed.
    pub ledger: Duration,
    /// Users' real-time events (what reconnecting clients replay) older than this are
    /// removed.
    pub realtime: Duration,
    /// How often the retention job runs; never zero.
    pub every: Duration,
}

/// What one run removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removed {
    /// Audit records.
    pub audit_records: u64,
    /// Notifications, with their deliveries.
    pub notifications: u64,
    /// Idempotency keys.
    pub idempotency_keys: u64,
    /// Users' real-time events.
    pub realtime_events: u64,
}

fn before(age: Duration) -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
}

/// What the job deletes from, and all it may touch: the four concerns whose data ages out.
/// Any store holding all four is one (the whole store, as the wiring hands it).
pub trait Expiring: AuditStore + LedgerStore + IdempotencyStore + EventLogStore {}

impl<S: AuditStore + LedgerStore + IdempotencyStore + EventLogStore + ?Sized> Expiring for S {}

/// Removes everything past its retention, once.
pub async fn run_once<S: Expiring + ?Sized>(
    store: &S,
    retention: &RetentionSettings,
) -> Result<Removed, StoreError> {
    Ok(Removed {
        audit_records: store.delete_audit_before(before(retention.audit)).await?,
        notifications: store.delete_ledger_before(before(retention.ledger)).await?,
        idempotency_keys: store
            .delete_idempotency_keys_before(before(idempotency::RETENTION))
            .await?,
        realtime_events: store
            .delete_realtime_events_before(before(retention.realtime))
            .await?,
    })
}

/// Runs the job every `retention.every` until shutdown.
pub async fn run<S: Expiring + ?Sized>(
    store: Arc<S>,
    retention: RetentionSettings,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(retention.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.raised() => return,
        }
        match run_once(store.as_ref(), &retention).await {
            Ok(removed) if removed != Removed::default() => {
                tracing::info!(?removed, "retention removed old data")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the retention job failed; it runs again later"),
        }
    }
}
