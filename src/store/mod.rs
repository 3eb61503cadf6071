//! The store: everything Herald keeps, in PostgreSQL or SQLite.
//!
//! One trait per concern, each in its own file with its row types: [`TenantStore`]
//! (tenants and API keys), [`IdempotencyStore`], [`LedgerStore`], [`AuditStore`],
//! [`ChatStore`], [`ConversationStore`] (conversations' members and read positions),
//! [`EventLogStore`] (each user's event log and replay cursor),
//! [`InboxStore`], [`PresenceStore`] (connection counts, and the key signing real-time
//! tokens), [`ReadReceiptStore`], [`TemplateStore`], [`DeviceStore`] and
//! [`ProviderStore`]; and [`HealthStore`], the health check's ping.
//!
//! One type implements them all: [`SqlStore`], over a sqlx pool, generic over the
//! database: each concern's trait is implemented once for `SqlStore<DB>` where `DB` is a
//! [`Dialect`], the SQL being the same on both (see [`sql`]).
//!
//! [`open`] answers the one store as an `Arc<dyn Store>`, [`Store`] being the sum of the
//! concerns (with `migrate`). A component is given only the trait it needs (or the few):
//! the wiring hands it a view of that one value by trait upcasting (`Arc<dyn Store>`
//! coerces to `Arc<dyn LedgerStore>`), so that there is one pool and one value to pass
//! around, and no adapter per concern. [`Stores`] holds every view at once for the HTTP
//! layer, whose handlers each reach the one they need.
//! Each database has its own migrations under `migrations/postgres` and
//! `migrations/sqlite`, applied by `herald migrate` and at start.

mod audit;
mod chat;
mod conversations;
mod devices;
mod events;
mod idempotency;
mod inbox;
mod ledger;
mod presence;
mod providers;
mod reads;
pub mod sql;
mod templates;
mod tenants;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Executor, IntoArguments};
use std::sync::Arc;

pub use audit::{AuditQuery, AuditRecord, AuditStore, NewAuditRecord};
pub use chat::{Audience, ChatStore, NewChat, Recorded, Sent, StoredChat};
pub use conversations::{Conversation, ConversationRead, ConversationStore};
pub use devices::{Device, DeviceStore};
pub use events::{EventLogStore, StoredEvent};
pub use idempotency::{Claim, IdempotencyStore, KeyBinding, KeyWrite};
pub use inbox::{InboxItem, InboxStore};
pub use ledger::{LedgerDelivery, LedgerNotification, LedgerRecord, LedgerStore};
pub use presence::{Presence, PresenceStore};
pub use providers::ProviderStore;
pub use reads::{ReadReceipt, ReadReceiptStore};
pub use sql::{Dialect, SqlStore};
pub use templates::{NewTemplate, StoredTemplate, TemplateStore};
pub use tenants::{ApiKeyInfo, StoredKey, Tenant, TenantStore};

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
    /// A write grouped with others in one transaction failed with its group: why, as
    /// the group's writer saw it.
    #[error("database (a grouped write): {0}")]
    Grouped(String),
}

/// What the health check asks of the store.
#[async_trait]
pub trait HealthStore: Send + Sync {
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The whole store: every concern, and the database's upkeep. For opening the store, for
/// the wiring that hands out its narrow views, and for what exercises all of it (the
/// store suite); components take the narrow traits.
#[async_trait]
pub trait Store:
    TenantStore
    + IdempotencyStore
    + LedgerStore
    + AuditStore
    + ChatStore
    + ConversationStore
    + EventLogStore
    + InboxStore
    + PresenceStore
    + ReadReceiptStore
    + TemplateStore
    + DeviceStore
    + ProviderStore
    + HealthStore
{
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
}

#[async_trait]
impl<DB> HealthStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Dialect,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    Self: TenantStore
        + IdempotencyStore
        + LedgerStore
        + AuditStore
        + ChatStore
        + ConversationStore
        + EventLogStore
        + InboxStore
        + PresenceStore
        + ReadReceiptStore
        + TemplateStore
        + DeviceStore
        + ProviderStore
        + HealthStore,
{
    async fn migrate(&self) -> Result<(), StoreError> {
        DB::migrator().run(&self.pool).await?;
        Ok(())
    }
}

/// The store's concerns as separate handles onto the one opened store, for the HTTP
/// layer: each handler reaches the one it needs (`state.stores.audit`). Built by
/// [`Stores::new`] from the whole store by trait upcasting, so every handle shares its pool.
#[derive(Clone)]
pub struct Stores {
    /// Tenants and their API keys.
    pub tenants: Arc<dyn TenantStore>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The delivery ledger.
    pub ledger: Arc<dyn LedgerStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    /// Chat messages.
    pub chat: Arc<dyn ChatStore>,
    /// Conversations, their members and read positions.
    pub conversations: Arc<dyn ConversationStore>,
    /// Users' event logs and replay cursors.
    pub events: Arc<dyn EventLogStore>,
    /// Users' inboxes.
    pub inbox: Arc<dyn InboxStore>,
    /// Presence, and the real-time token key.
    pub presence: Arc<dyn PresenceStore>,
    /// Read receipts.
    pub reads: Arc<dyn ReadReceiptStore>,
    /// Email templates.
    pub templates: Arc<dyn TemplateStore>,
    /// The device registry.
    pub devices: Arc<dyn DeviceStore>,
    /// Delivery provider settings.
    pub providers: Arc<dyn ProviderStore>,
    /// Whether the database answers.
    pub health: Arc<dyn HealthStore>,
}

impl Stores {
    /// Each concern of `store`.
    pub fn new(store: &Arc<dyn Store>) -> Self {
        Stores {
            tenants: store.clone(),
            idempotency: store.clone(),
            ledger: store.clone(),
            audit: store.clone(),
            chat: store.clone(),
            conversations: store.clone(),
            events: store.clone(),
            inbox: store.clone(),
            presence: store.clone(),
            reads: store.clone(),
            templates: store.clone(),
            devices: store.clone(),
            providers: store.clone(),
            health: store.clone(),
        }
    }
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
