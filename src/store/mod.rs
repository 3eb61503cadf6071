//! The store: tenants and their API keys, and idempotency keys, in PostgreSQL or SQLite.
//!
//! One [`Store`] trait, with an implementation per database ([`SqlStore`] over a sqlx
//! pool); each database has its own migrations under `migrations/postgres` and
//! `migrations/sqlite`, applied by `herald migrate` and at start. The SQL is written once,
//! with `$1`-style parameters in order, which both databases read the same way.

mod devices;
mod providers;
mod realtime;
mod sql;
mod templates;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

pub use devices::{Device, DeviceStore};
pub use providers::ProviderStore;
pub use realtime::{InboxItem, NewChat, Presence, ReadReceipt, RealtimeStore, StoredEvent};
pub use sql::SqlStore;
pub use templates::{NewTemplate, StoredTemplate, TemplateStore};

pub use crate::audit::chain::NewAuditRecord;
use crate::domain::TenantId;
use crate::outcome::{Channel, DeliveryStatus, NotificationState, RenderedFrom};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// The tenant's id: the `tenantId` its events carry.
    #[schema(value_type = String)]
    pub id: TenantId,
    /// A name for people.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An API key as listed: never the key itself, only its public id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    /// The key's public prefix, which identifies it.
    pub id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What the store keeps of a key to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The tenant the key belongs to.
    pub tenant_id: TenantId,
    /// SHA-256 of the whole key.
    pub hash: Vec<u8>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// The events an idempotency key stands for: bound to the key before they are published,
/// so that every attempt with the key publishes the same envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBinding {
    /// The events' ids, in the order sent.
    pub event_ids: Vec<String>,
    /// When they were accepted (the envelopes' `createdAt`).
    pub accepted_at: DateTime<Utc>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or had expired): this request owns it now, with its binding.
    Claimed,
    /// An earlier request with the key did not see its events confirmed (or its process
    /// died): this request owns it now and publishes the same events again.
    Resumed(KeyBinding),
    /// Another request holds the key.
    Held {
        /// Its fingerprint, to tell a repeat from a different request.
        fingerprint: Vec<u8>,
        /// Its answer, once it has one: status and JSON body.
        response: Option<(u16, String)>,
    },
}

/// A notification in the delivery ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerNotification {
    /// Herald's id for the event.
    pub id: String,
    /// The tenant it belongs to.
    #[serde(skip)]
    pub tenant_id: String,
    /// `chat`, `push`, `email` or `audit`.
    pub kind: String,
    /// Where it stands, its deliveries summed up.
    pub status: NotificationState,
    /// Why the event as a whole ended as it did, when it did not reach its recipients
    /// (`unknown tenant`, the last error of a failed event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    #[serde(skip)]
    pub updated_at: DateTime<Utc>,
    /// The template an email was rendered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<RenderedFrom>,
}

/// One delivery of a notification: to one recipient, through one channel, to one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDelivery {
    /// The user or address it is for.
    pub recipient: String,
    /// The channel it goes through.
    pub channel: Channel,
    /// Where it goes (an address, a device token), or empty until known.
    pub target: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Handler attempts so far.
    pub attempts: u32,
    /// The last error, if an attempt failed.
    pub last_error: Option<String>,
    /// What the provider last answered (an SMTP reply, say), when it said something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One write to the ledger.
#[derive(Debug, Clone)]
pub struct LedgerRecord {
    /// The notification's state.
    pub notification: LedgerNotification,
    /// Its deliveries' states.
    pub deliveries: Vec<LedgerDelivery>,
    /// Whether this write replaces what is recorded (an outcome) or only fills in what is
    /// missing (the acceptance, which may land after a fast worker's outcome).
    pub replace: bool,
}

/// An audit record as stored, with its place and hashes in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The record.
    pub record: NewAuditRecord,
    /// Its place in the tenant's chain, from 1.
    pub seq: i64,
    /// When Herald stored it.
    pub recorded_at: DateTime<Utc>,
    /// The hash of the record before it (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// Its own hash.
    pub hash: Vec<u8>,
}

/// A filtered page of a tenant's audit records, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this user's.
    pub user_id: Option<String>,
    /// Only this entity type.
    pub entity_type: Option<String>,
    /// Only this entity.
    pub entity_id: Option<String>,
    /// Only those that occurred at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only those that occurred before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only those before this place in the chain (the cursor).
    pub before_seq: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What was to be created exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be opened.
    #[error("cannot open the database at {at}: {cause}")]
    Open {
        /// Where, with any password hidden.
        at: String,
        /// Why.
        cause: Box<StoreError>,
    },
    /// Applying migrations failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A value read back does not parse.
    #[error("corrupt value in the database: {0}")]
    Corrupt(String),
}

/// Where tenants and keys live.
#[async_trait]
pub trait Store: TemplateStore + ProviderStore + DeviceStore + RealtimeStore + Send + Sync {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a tenant with its first key, together; `Conflict` if the id is taken.
    async fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
        first_key: (&str, &[u8]),
    ) -> Result<Tenant, StoreError>;

    /// The tenant, if it exists.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;

    /// How many tenants there are.
    async fn count_tenants(&self) -> Result<u64, StoreError>;

    /// Adds a key (its id and hash) to a tenant.
    async fn add_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        hash: &[u8],
    ) -> Result<ApiKeyInfo, StoreError>;

    /// A tenant's keys, oldest first.
    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, StoreError>;

    /// Revokes one of a tenant's keys; false if the tenant has no such key.
    async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<bool, StoreError>;

    /// The key with this id, to check a presented key against.
    async fn api_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError>;

    /// Claims an idempotency key for a request with `fingerprint`, binding it to
    /// `binding`; a claim older than `expired_before` is taken over as if free. A claim
    /// whose events were not confirmed, or whose request started before `stale_before`
    /// and never answered, is resumed with its own binding.
    async fn claim_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &[u8],
        binding: &KeyBinding,
        expired_before: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Claim, StoreError>;

    /// Records the answer of the request that claimed the key.
    async fn complete_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError>;

    /// Marks a claimed key's events as not confirmed, so that a repeat publishes them
    /// again; keeps the binding.
    async fn unconfirm_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<(), StoreError>;

    /// Writes ledger records in one transaction.
    async fn write_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError>;

    /// Deletes the ledger entries of these notifications that are as their acceptance
    /// wrote them (`queued`, no attempt made): their events were not queued after all.
    async fn withdraw_acceptances(&self, ids: &[String]) -> Result<(), StoreError>;

    /// A tenant's notification and its deliveries, if it has one with this id.
    async fn notification(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<(LedgerNotification, Vec<LedgerDelivery>)>, StoreError>;

    /// Deletes ledger entries of notifications accepted before `cutoff`; answers how many
    /// notifications.
    async fn delete_ledger_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Appends audit records to their tenants' chains, in one transaction, skipping ids
    /// already appended; answers how many were appended.
    async fn append_audit(&self, records: &[NewAuditRecord]) -> Result<u64, StoreError>;

    /// A tenant's audit records matching `query`, newest first.
    async fn audit_records(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// A tenant's audit record with this id (the id of the event it was appended from).
    async fn audit_record(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<AuditRecord>, StoreError>;

    /// Up to `limit` of a tenant's audit records after `after_seq`, in chain order.
    async fn audit_chain(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Deletes audit records stored before `cutoff`; answers how many. A chain then starts
    /// at its oldest remaining record, which verification takes on trust.
    async fn delete_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Deletes idempotency keys created before `cutoff`; answers how many.
    async fn delete_idempotency_keys_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// Opens the store at `url` (creating a SQLite file and its directory when missing) and
/// applies its migrations.
pub async fn open(url: &SecretString) -> Result<Arc<dyn Store>, StoreError> {
    let url = url.expose_secret();
    let opened = async {
        let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
            Arc::new(SqlStore::open_sqlite(url).await?)
        } else {
            Arc::new(SqlStore::open_postgres(url).await?)
        };
        store.migrate().await?;
        Ok(store)
    };
    opened.await.map_err(|cause| StoreError::Open {
        at: without_password(url),
        cause: Box::new(cause),
    })
}

/// `url` fit for an error message: host and database named, password hidden.
fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "the configured URL (it does not parse)".to_owned(),
    }
}
