//! Tenants and API keys: creating them, and telling which tenant a presented key is for.
//!
//! Checked keys are cached for half a second, so that authentication costs no database
//! round trip per request while a revoked key is still refused within a second, by every
//! instance sharing the database.

pub mod keys;
pub mod limits;

use crate::domain::TenantId;
use crate::store::{ApiKeyInfo, StoreError, StoredKey, Tenant, TenantStore};
pub use keys::NewApiKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a checked key is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_millis(500);
/// Most keys kept in the cache; beyond that it is emptied, which costs only lookups.
const CACHE_LIMIT: usize = 10_000;

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No key, a malformed key, an unknown key or a revoked key.
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    /// The database could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a tenant found missing is taken as missing without asking again: short, so
/// that a tenant created after its first events were rejected is served at once.
const MISSING_TTL: Duration = Duration::from_secs(1);

/// Tenants, keys, and the key cache.
pub struct Tenancy {
    store: Arc<dyn TenantStore>,
    cache: Mutex<HashMap<String, (StoredKey, Instant)>>,
    /// Tenants known to exist (tenants are never deleted, so it holds), and those found
    /// missing, with when: the worker pools ask for every event.
    known: Mutex<HashMap<TenantId, Option<Instant>>>,
}

impl Tenancy {
    /// Tenancy over `store`.
    pub fn new(store: Arc<dyn TenantStore>) -> Self {
        Tenancy {
            store,
            cache: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `tenant` exists; answered from memory for tenants seen before.
    pub async fn exists(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let cached = self
            .known
            .lock()
            .expect("tenant cache lock poisoned")
            .get(tenant)
            .copied();
        match cached {
            Some(None) => return Ok(true),
            Some(Some(missing_since)) if missing_since.elapsed() < MISSING_TTL => {
                return Ok(false);
            }
            _ => {}
        }
        let exists = self.store.tenant(tenant).await?.is_some();
        let mut known = self.known.lock().expect("tenant cache lock poisoned");
        if known.len() >= CACHE_LIMIT {
            known.clear();
        }
        known.insert(tenant.clone(), (!exists).then(Instant::now));
        Ok(exists)
    }

    /// Where tenants and keys are stored.
    pub fn store(&self) -> &Arc<dyn TenantStore> {
        &self.store
    }

    /// The tenant a presented key belongs to.
    pub async fn authenticate(&self, presented: &str) -> Result<TenantId, AuthError> {
        let id = keys::key_id(presented).ok_or(AuthError::Unauthorized)?;
        let cached = {
            let cache = self.cache.lock().expect("key cache lock poisoned");
            cache
                .get(id)
                .filter(|(_, fetched)| fetched.elapsed() < CACHE_TTL)
                .map(|(key, _)| key.clone())
        };
        let stored = match cached {
            Some(stored) => stored,
            None => {
                let stored = self
                    .store
                    .api_key(id)
                    .await?
                    .ok_or(AuthError::Unauthorized)?;
                let mut cache = self.cache.lock().expect("key cache lock poisoned");
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(id.to_owned(), (stored.clone(), Instant::now()));
                stored
            }
        };
        if stored.revoked || !keys::matches(presented, &stored.hash) {
            return Err(AuthError::Unauthorized);
        }
        Ok(stored.tenant_id)
    }

    /// Creates a tenant and its first key.
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
    ) -> Result<(Tenant, NewApiKey), StoreError> {
        let key = NewApiKey::generate();
        let tenant = self
            .store
            .create_tenant(id, name, (&key.id, &key.hash))
            .await?;
        Ok((tenant, key))
    }

    /// Adds a key to a tenant.
    pub async fn add_key(&self, tenant: &TenantId) -> Result<(ApiKeyInfo, NewApiKey), StoreError> {
        let key = NewApiKey::generate();
        let info = self.store.add_api_key(tenant, &key.id, &key.hash).await?;
        Ok((info, key))
    }

    /// Creates the tenant `default` when there is no tenant at all, so that a first run
    /// works with no setup; answers its key, to be shown once.
    pub async fn create_default_tenant_if_none(
        &self,
    ) -> Result<Option<(Tenant, NewApiKey)>, StoreError> {
        if self.store.count_tenants().await? > 0 {
            return Ok(None);
        }
        let id = TenantId::parse("default").expect("'default' is a valid tenant id");
        match self.create_tenant(&id, "default").await {
            Ok(created) => Ok(Some(created)),
            // Another instance created it first.
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
