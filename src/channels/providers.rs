//! Tenants' provider settings as the workers read them: from the store, parsed once and
//! kept for a second, so that a busy queue neither reads nor parses them per message.

use crate::domain::TenantId;
use crate::store::{ProviderStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long settings read from the store are used before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// A tenant's stored settings, parsed; or why they do not parse.
pub type Parsed<T> = Result<Arc<T>, String>;

type Entry<T> = (Instant, Option<Parsed<T>>);

/// A cache of one provider's settings (`smtp`, `apns`, `fcm`) per tenant, parsed into `T`.
pub struct TenantProviders<T> {
    provider: &'static str,
    store: Arc<dyn ProviderStore>,
    parse: fn(&str) -> Result<T, String>,
    cached: Mutex<HashMap<TenantId, Entry<T>>>,
}

impl<T> TenantProviders<T> {
    /// The `provider` settings of every tenant, read from `store` and read by `parse`
    /// from their stored JSON.
    pub fn new(
        provider: &'static str,
        store: Arc<dyn ProviderStore>,
        parse: fn(&str) -> Result<T, String>,
    ) -> Self {
        TenantProviders {
            provider,
            store,
            parse,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's settings, if it has any.
    pub async fn get(&self, tenant: &TenantId) -> Result<Option<Parsed<T>>, StoreError> {
        if let Some((read, settings)) = self.cached.lock().expect("never poisoned").get(tenant)
            && read.elapsed() < FRESH_FOR
        {
            return Ok(settings.clone());
        }
        let settings = self
            .store
            .provider(tenant, self.provider)
            .await?
            .map(|(json, _)| (self.parse)(&json).map(Arc::new));
        let mut cached = self.cached.lock().expect("never poisoned");
        // Entries of idle tenants go once they are stale, so that the map stays small.
        if cached.len() > 4096 {
            cached.retain(|_, (read, _)| read.elapsed() < FRESH_FOR);
        }
        cached.insert(tenant.clone(), (Instant::now(), settings.clone()));
        Ok(settings)
    }
}
