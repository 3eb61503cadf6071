//! Tenants' provider settings as the workers read them: from the store, kept for a second
//! so that a busy queue does not read them per message.

use crate::domain::TenantId;
use crate::store::{ProviderStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long settings read from the store are used before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(1);

type Entry = (Instant, Option<Arc<str>>);

/// A cache of one provider's settings (`smtp`, `apns`, `fcm`) per tenant.
pub struct TenantProviders {
    provider: &'static str,
    store: Arc<dyn ProviderStore>,
    cached: Mutex<HashMap<TenantId, Entry>>,
}

impl TenantProviders {
    /// The `provider` settings of every tenant, read from `store`.
    pub fn new(provider: &'static str, store: Arc<dyn ProviderStore>) -> Self {
        TenantProviders {
            provider,
            store,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's settings as JSON text, if it has any.
    pub async fn get(&self, tenant: &TenantId) -> Result<Option<Arc<str>>, StoreError> {
        if let Some((read, settings)) = self.cached.lock().expect("never poisoned").get(tenant)
            && read.elapsed() < FRESH_FOR
        {
            return Ok(settings.clone());
        }
        let settings = self
            .store
            .provider(tenant, self.provider)
            .await?
            .map(|(json, _)| Arc::from(json));
        let mut cached = self.cached.lock().expect("never poisoned");
        // Entries of idle tenants go once they are stale, so that the map stays small.
        if cached.len() > 4096 {
            cached.retain(|_, (read, _)| read.elapsed() < FRESH_FOR);
        }
        cached.insert(tenant.clone(), (Instant::now(), settings.clone()));
        Ok(settings)
    }
}
