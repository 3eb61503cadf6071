//! Every tenant's templates, compiled on first use and kept until the tenant's template
//! revision in the store moves, which is checked at most once a second (and at once by
//! the process that made the change).

use super::registry::Registry;
use super::{LAYOUT, RenderError, RenderLimits, Rendered};
use crate::domain::TenantId;
use crate::outcome::RenderedFrom;
use crate::store::{StoreError, TemplateStore};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a compiled tenant registry is used before its revision is checked again.
const REVISION_CHECK: Duration = Duration::from_secs(1);

/// Tenants whose compiled templates are kept; beyond it, those unused longest are dropped.
const CACHED_TENANTS: usize = 1024;

struct Cached {
    revision: i64,
    checked: Instant,
    registry: Arc<Registry>,
}

/// Every tenant's templates, compiled on first use and kept while current.
pub struct Templates {
    built_in: Arc<Registry>,
    store: Arc<dyn TemplateStore>,
    tenants: Mutex<HashMap<TenantId, Cached>>,
}

impl Templates {
    /// The built-in templates, with tenants' templates read from `store`, rendering within
    /// `limits`.
    pub fn new(store: Arc<dyn TemplateStore>, limits: RenderLimits) -> Self {
        Templates {
            built_in: Arc::new(Registry::built_in().with_limits(limits)),
            store,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's compiled templates. `fresh` checks the revision now rather than
    /// trusting one checked within the last second.
    pub async fn registry(
        &self,
        tenant: &TenantId,
        fresh: bool,
    ) -> Result<Arc<Registry>, StoreError> {
        let known = {
            let tenants = self
                .tenants
                .lock()
                .expect("the template cache is never poisoned");
            tenants
                .get(tenant)
                .map(|c| (c.revision, c.checked, c.registry.clone()))
        };
        if let Some((_, checked, registry)) = &known
            && !fresh
            && checked.elapsed() < REVISION_CHECK
        {
            return Ok(registry.clone());
        }
        let revision = self.store.template_revision(tenant).await?;
        let registry = match known {
            Some((cached, _, registry)) if cached == revision => registry,
            _ if revision == 0 => self.built_in.clone(),
            _ => {
                let templates = self.store.current_templates(tenant).await?;
                Arc::new(Registry::with_tenant(&self.built_in, tenant, &templates))
            }
        };
        let mut tenants = self
            .tenants
            .lock()
            .expect("the template cache is never poisoned");
        if tenants.len() >= CACHED_TENANTS && !tenants.contains_key(tenant) {
            let oldest = tenants
                .iter()
                .min_by_key(|(_, c)| c.checked)
                .map(|(t, _)| t.clone());
            if let Some(oldest) = oldest {
                tenants.remove(&oldest);
            }
        }
        tenants.insert(
            tenant.clone(),
            Cached {
                revision,
                checked: Instant::now(),
                registry: registry.clone(),
            },
        );
        Ok(registry)
    }

    /// Renders a tenant's template `name` (its own, else the built-in one).
    pub async fn render(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: Option<&str>,
        data: &Map<String, Value>,
        subject: Option<&str>,
    ) -> Result<(Rendered, RenderedFrom), RenderError> {
        self.registry(tenant, false)
            .await?
            .render(name, locale, data, subject)
    }

    /// Drops what is compiled for `tenant`, after this process changed its templates, so
    /// that the next render here reads them again.
    pub fn forget(&self, tenant: &TenantId) {
        self.tenants
            .lock()
            .expect("the template cache is never poisoned")
            .remove(tenant);
    }

    /// The names of the built-in templates that can be sent.
    pub fn built_in_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .built_in
            .names()
            .filter(|n| *n != LAYOUT)
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// Whether `name` is a built-in template.
    pub fn is_built_in(&self, name: &str) -> bool {
        self.built_in.has(name)
    }
}
