//! Push: every recipient's registered devices, each through its provider: iOS devices
//! through APNs, Android and web devices through FCM (`push.mobile` goes to iOS and
//! Android, `push.web` to web devices). Credentials are the tenant's own, else the
//! configured ones; a device whose provider has neither gets the outbox
//! (`data/outbox/push.jsonl`).
//!
//! Each device ends in its own outcome, in the ledger: a token the provider calls
//! unregistered or invalid is removed from the registry and not retried; 429 and 5xx are
//! retried (only those devices) after the provider's `Retry-After`; credentials the
//! provider refuses fail the tenant's pushes at once, without asking the provider again,
//! until the tenant sets new ones or `push.refused_credentials_for` passes.
//!
//! The handler takes its [`PushSettings`] ready: configured credentials already read and
//! checked, the extra CA already loaded, counts that cannot be zero. A tenant's own
//! credentials are read and checked when the first client for them is made.

mod apns;
mod credentials;
mod fcm;
mod jwt;
mod outbox;

pub use credentials::{
    ApnsCredentials, ApnsEnvironment, ApnsKey, CredentialError, Credentials, FcmCredentials,
    FcmServiceAccount, ReadyCredentials,
};

use crate::channels::tls::{self, ExtraCa};
use crate::channels::{OutboundLimit, Parsed, TenantProviders};
use crate::domain::{Envelope, Event, Platform, PushNotification, TenantId};
use crate::ledger::Ledger;
use crate::outbound::OutboundPolicy;
use crate::outcome::{Channel, DeliveryOutcome, Outcome, Report};
use crate::store::{Device, DeviceStore, ProviderStore, StoreError};
use crate::workers::Handler;
use apns::ApnsClient;
use async_trait::async_trait;
use fcm::FcmClient;
use futures_util::StreamExt;
use outbox::PushOutbox;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Push delivery through APNs and FCM, as configured (`push.*`).
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Where pushes go (as JSON lines) when the tenant has no provider for the device.
    pub outbox: PathBuf,
    /// How long one request to a provider may take.
    pub timeout: Duration,
    /// Devices of one notification sent to at once.
    pub parallel_devices: NonZeroUsize,
    /// How long a tenant's credentials that a provider refused stay refused without
    /// asking the provider again (unless the tenant sets new ones).
    pub refused_credentials_for: Duration,
    /// CA certificates trusted for providers besides the system's.
    pub extra_ca: Option<ExtraCa>,
    /// APNs.
    pub apns: ApnsSettings,
    /// FCM.
    pub fcm: FcmSettings,
    /// Outbound limits, in pushes per second (0: none).
    pub rate_limits: PushRateLimits,
}

/// APNs endpoints and the credentials of tenants without their own.
#[derive(Debug, Clone)]
pub struct ApnsSettings {
    /// The production endpoint.
    pub url: ProviderUrl,
    /// The sandbox (development) endpoint.
    pub sandbox_url: ProviderUrl,
    /// Credentials for tenants without their own.
    pub credentials: Option<ApnsKey>,
}

/// FCM endpoints and the service account of tenants without their own.
#[derive(Debug, Clone)]
pub struct FcmSettings {
    /// The FCM HTTP v1 API's base URL.
    pub url: ProviderUrl,
    /// Google's OAuth2 token endpoint; when unset, the service account's `token_uri`.
    pub token_url: Option<String>,
    /// The service account for tenants without their own.
    pub service_account: Option<FcmServiceAccount>,
}

/// Outbound push limits, in pushes per second; 0 means no limit.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRateLimits {
    /// Per tenant and provider.
    pub per_tenant: u32,
    /// Per provider (APNs, FCM), over all tenants.
    pub per_provider: u32,
}

/// A provider's endpoint: an http(s) URL (plain http for a local stand-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrl(String);

impl ProviderUrl {
    /// The URL, if it is http(s).
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        if url.starts_with("https://") || url.starts_with("http://") {
            Ok(ProviderUrl(url.to_owned()))
        } else {
            Err("must be an http(s) URL")
        }
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The ledger's channel for push.
const CHANNEL: Channel = Channel::Push;
/// The ledger's target for a push's copy in the recipient's in-app inbox.
const INBOX: &str = "inbox";

/// Where a push marked `inApp` goes besides devices: each recipient's in-app inbox, and
/// their live connections.
#[async_trait]
pub trait InAppInbox: Send + Sync {
    /// Adds `item` (the notification as the inbox lists it) under `id` to each of
    /// `users`' inboxes, once however often it is added, and tells their connections.
    async fn deliver(
        &self,
        tenant: &TenantId,
        users: &[&str],
        id: &str,
        item: &serde_json::Value,
    ) -> Result<(), StoreError>;
}

/// What a provider made of one push to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// Accepted, with what the provider said.
    Delivered(String),
    /// Refused for now: try again, after `after` if the provider said when.
    Retry {
        /// What the provider said.
        error: String,
        /// Its `Retry-After`.
        after: Option<Duration>,
    },
    /// The token is no longer (or never was) valid: it leaves the registry.
    Unregistered(String),
    /// Refused for good (a bad payload, say).
    Failed(String),
    /// The provider refused the credentials themselves.
    RefusedCredentials(String),
}

/// A `Retry-After` header in seconds (the only form providers use).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A provider, for limits and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Apns,
    Fcm,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
        }
    }
}

/// A tenant's credentials as stored, parsed, with their fingerprint: both made once per
/// read of the store, not per push.
struct TenantCredentials<C> {
    credentials: C,
    fingerprint: String,
}

impl<C: Credentials + serde::de::DeserializeOwned> TenantCredentials<C> {
    /// Reads stored credentials of `C`'s provider.
    fn parse(json: &str) -> Result<Self, String> {
        let credentials: C = serde_json::from_str(json)
            .map_err(|e| format!("stored {} credentials: {e}", C::PROVIDER))?;
        Ok(TenantCredentials {
            fingerprint: credentials.fingerprint(),
            credentials,
        })
    }
}

/// Credentials a route found: the configured ones, ready since start, or a tenant's as
/// stored.
enum Found<C> {
    Configured(ReadyCredentials<C>),
    Tenant(Arc<TenantCredentials<C>>),
}

impl<C: Credentials> Found<C> {
    /// The tenant's own credentials (`own`), else the `configured` ones; without either,
    /// the route is the outbox, and stored ones that do not parse make it broken.
    fn of(
        own: Option<Parsed<TenantCredentials<C>>>,
        configured: Option<&ReadyCredentials<C>>,
    ) -> Result<Self, Route> {
        match own {
            Some(parsed) => parsed.map(Found::Tenant).map_err(Route::Broken),
            None => configured
                .cloned()
                .map(Found::Configured)
                .ok_or(Route::Outbox),
        }
    }
}

/// The client for `found` of `provider` (`APNs`, `FCM`): the one made before for the same
/// credentials, else a new one by `make`. A tenant's credentials are read and checked only
/// then, not on every event.
fn client_for<C: Credentials, T>(
    provider: &str,
    found: Found<C>,
    clients: &Mutex<HashMap<String, Arc<T>>>,
    make: impl FnOnce(ReadyCredentials<C>) -> Result<T, String>,
) -> Result<(Arc<T>, String), String> {
    let fingerprint = match &found {
        Found::Configured(ready) => ready.fingerprint().to_owned(),
        Found::Tenant(stored) => stored.fingerprint.clone(),
    };
    let mut clients = clients.lock().expect("never poisoned");
    if let Some(client) = clients.get(&fingerprint) {
        return Ok((client.clone(), fingerprint));
    }
    let ready = match found {
        Found::Configured(ready) => ready,
        Found::Tenant(stored) => stored
            .credentials
            .clone()
            .ready()
            .map_err(|e| format!("{provider} credentials: {}: {}", e.field, e.message))?,
    };
    let client = Arc::new(make(ready)?);
    clients.insert(fingerprint.clone(), client.clone());
    Ok((client, fingerprint))
}

/// Where one device's push goes.
enum Route {
    Apns(Arc<ApnsClient>, String),
    Fcm(Arc<FcmClient>, String),
    Outbox,
    /// The credentials could not be used: why.
    Broken(String),
}

/// The push queue's handler.
pub struct PushHandler {
    settings: PushSettings,
    /// Where tenants' token endpoints may be.
    outbound: OutboundPolicy,
    /// Where recipients' devices are registered.
    devices: Arc<dyn DeviceStore>,
    /// Where earlier attempts' deliveries are looked up.
    ledger: Ledger,
    /// For FCM and Google's token endpoint.
    http: reqwest::Client,
    /// TLS for APNs, which speaks HTTP/2 only.
    apns_tls: Arc<rustls::ClientConfig>,
    tenant_apns: TenantProviders<TenantCredentials<ApnsCredentials>>,
    tenant_fcm: TenantProviders<TenantCredentials<FcmCredentials>>,
    apns_clients: Mutex<HashMap<String, Arc<ApnsClient>>>,
    fcm_clients: Mutex<HashMap<String, Arc<FcmClient>>>,
    /// Credentials (by fingerprint) a provider refused, until when.
    refused: Mutex<HashMap<String, (Instant, String)>>,
    outbox: PushOutbox,
    /// Where `inApp` notifications also go.
    /// Where in-app copies go.
    inbox: Arc<dyn InAppInbox>,
    per_tenant: OutboundLimit,
    per_provider: OutboundLimit,
}

impl PushHandler {
    /// A handler sending as `settings` say.
    pub fn new(
        settings: &PushSettings,
        devices: Arc<dyn DeviceStore>,
        providers: Arc<dyn ProviderStore>,
        ledger: Ledger,
        inbox: Arc<dyn InAppInbox>,
        outbound: OutboundPolicy,
    ) -> Self {
        let extra_ca = settings.extra_ca.as_ref();
        let tls = tls::client_config(extra_ca, &[b"h2", b"http/1.1"]);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(settings.timeout)
            .build()
            .expect("the HTTP client builds");
        let apns_tls = tls::client_config(extra_ca, &[b"h2"]);
        PushHandler {
            tenant_apns: TenantProviders::new("apns", providers.clone(), TenantCredentials::parse),
            tenant_fcm: TenantProviders::new("fcm", providers, TenantCredentials::parse),
            devices,
            ledger,
            http,
            apns_tls,
            apns_clients: Mutex::new(HashMap::new()),
            fcm_clients: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            outbox: PushOutbox::new(settings.outbox.clone()),
            inbox,
            per_tenant: OutboundLimit::per_second(settings.rate_limits.per_tenant),
            per_provider: OutboundLimit::per_second(settings.rate_limits.per_provider),
            settings: settings.clone(),
            outbound,
        }
    }

    /// The route for a tenant's devices of `provider`.
    async fn route(&self, tenant: &TenantId, provider: Provider) -> Route {
        let broken =
            |e: StoreError| Route::Broken(format!("reading the tenant's credentials: {e}"));
        match provider {
            Provider::Apns => match self.tenant_apns.get(tenant).await {
                Ok(own) => self.apns_route(own),
                Err(e) => broken(e),
            },
            Provider::Fcm => match self.tenant_fcm.get(tenant).await {
                Ok(own) => self.fcm_route(own),
                Err(e) => broken(e),
            },
        }
    }

    /// The route for a tenant's iOS devices, given its own settings as stored, if any.
    fn apns_route(&self, own: Option<Parsed<TenantCredentials<ApnsCredentials>>>) -> Route {
        let apns = &self.settings.apns;
        let found = match Found::of(own, apns.credentials.as_ref()) {
            Ok(found) => found,
            Err(route) => return route,
        };
        let client = client_for("APNs", found, &self.apns_clients, |key| {
            // A client of its own per credential: one HTTP/2 connection to Apple that
            // every push of these credentials is multiplexed over.
            let http = reqwest::Client::builder()
                .tls_backend_preconfigured((*self.apns_tls).clone())
                .http2_prior_knowledge()
                .timeout(self.settings.timeout)
                .build()
                .map_err(|e| format!("the APNs client: {e}"))?;
            Ok(ApnsClient::new(key, &apns.url, &apns.sandbox_url, http))
        });
        match client {
            Ok((client, fingerprint)) => Route::Apns(client, fingerprint),
            Err(why) => Route::Broken(why),
        }
    }

    /// The route for a tenant's FCM devices, given its own settings as stored, if any.
    fn fcm_route(&self, own: Option<Parsed<TenantCredentials<FcmCredentials>>>) -> Route {
        let fcm = &self.settings.fcm;
        let found = match Found::of(own, fcm.service_account.as_ref()) {
            Ok(found) => found,
            Err(route) => return route,
        };
        // Checked again here for settings stored before the check was.
        if let Found::Tenant(stored) = &found
            && let Err(e) = stored.credentials.check_token_uri(&self.outbound)
        {
            return Route::Broken(format!("FCM credentials: {} {}", e.field, e.message));
        }
        let client = client_for("FCM", found, &self.fcm_clients, |account| {
            Ok(FcmClient::new(
                account,
                &fcm.url,
                fcm.token_url.as_deref(),
                self.http.clone(),
            ))
        });
        match client {
            Ok((client, fingerprint)) => Route::Fcm(client, fingerprint),
            Err(why) => Route::Broken(why),
        }
    }

    /// Why credentials are refused, while they are.
    fn refused(&self, fingerprint: &str) -> Option<String> {
        let mut refused = self.refused.lock().expect("never poisoned");
        match refused.get(fingerprint) {
            Some((until, why)) if Instant::now() < *until => Some(why.clone()),
            Some(_) => {
                refused.remove(fingerprint);
                None
            }
            None => None,
        }
    }

    fn refuse(&self, fingerprint: &str, why: &str) {
        let until = Instant::now() + self.settings.refused_credentials_for;
        self.refused
            .lock()
            .expect("never poisoned")
            .insert(fingerprint.to_owned(), (until, why.to_owned()));
    }

    /// Sends the push to one device; answers its outcome and what the provider said. Its
    /// span, a child of the worker's (which has the event id), names the device by its
    /// token's first characters: enough to find it, not enough to push to it.
    #[tracing::instrument(name = "push_send", skip_all, fields(
        platform = %device.platform,
        token = %device.token.get(..8).unwrap_or(&device.token),
    ))]
    async fn push_to(
        &self,
        envelope: &Envelope,
        push: &PushNotification,
        device: &Device,
        routes: &HashMap<&'static str, Route>,
    ) -> (Outcome, Option<String>) {
        let tenant = envelope.event.tenant_id();
        let provider = if device.platform == "ios" {
            Provider::Apns
        } else {
            Provider::Fcm
        };
        let route = &routes[provider.name()];
        let (result, fingerprint) = match route {
            Route::Broken(why) => return (Outcome::failed(why), None),
            Route::Outbox => {
                return match self.outbox.write(envelope, push, device).await {
                    Ok(()) => (Outcome::Delivered, Some("written to the outbox".into())),
                    Err(e) => (
                        Outcome::retry(format!("writing the push outbox: {e}")),
                        None,
                    ),
                };
            }
            Route::Apns(_, fingerprint) | Route::Fcm(_, fingerprint) => {
                if let Some(why) = self.refused(fingerprint) {
                    return (Outcome::failed(refusal(provider, &why)), Some(why));
                }
                self.per_tenant
                    .wait(&format!("{}:{}", provider.name(), tenant.as_str()))
                    .await;
                self.per_provider.wait(provider.name()).await;
                let result = match route {
                    Route::Apns(client, _) => {
                        // The same id on every attempt, so that Apple can tell a repeat.
                        let apns_id =
                            uuid::Uuid::new_v5(&envelope.id.as_uuid(), device.token.as_bytes());
                        client.send(&device.token, push, &apns_id.to_string()).await
                    }
                    Route::Fcm(client, _) => client.send(&device.token, push).await,
                    _ => unreachable!("matched above"),
                };
                (result, fingerprint)
            }
        };
        match &result {
            PushResult::Delivered(reply) => {
                tracing::debug!(provider = provider.name(), %reply, "pushed")
            }
            PushResult::Retry { error, after } => {
                tracing::info!(provider = provider.name(), %error, ?after, "push to retry")
            }
            PushResult::Unregistered(said) | PushResult::Failed(said) => {
                tracing::info!(provider = provider.name(), reply = %said, "push refused")
            }
            PushResult::RefusedCredentials(_) => {} // Logged below, with the tenant.
        }
        match result {
            PushResult::Delivered(reply) => (Outcome::Delivered, Some(reply)),
            PushResult::Retry { error, after } => (
                Outcome::Retry {
                    error: error.clone(),
                    after,
                },
                Some(error),
            ),
            PushResult::Failed(error) => (Outcome::failed(&error), Some(error)),
            PushResult::Unregistered(said) => {
                let removed = self
                    .devices
                    .remove_device(tenant, &device.token, Some(&device.user_id))
                    .await;
                let note = match removed {
                    Ok(_) => "the token was removed from the registry".to_owned(),
                    Err(e) => format!("removing the token failed: {e}"),
                };
                (Outcome::failed(format!("{said}; {note}")), Some(said))
            }
            PushResult::RefusedCredentials(said) => {
                tracing::error!(%tenant, provider = provider.name(), reply = %said, "the provider refused the tenant's credentials");
                self.refuse(fingerprint, &said);
                (Outcome::failed(refusal(provider, &said)), Some(said))
            }
        }
    }

    async fn deliver(&self, envelope: &Envelope, push: &PushNotification, attempt: u32) -> Outcome {
        let tenant = envelope.event.tenant_id();
        let users: Vec<&str> = push
            .recipient_ids
            .as_slice()
            .iter()
            .map(|u| u.as_str())
            .collect();
        let platforms: &[&str] = match push.platform {
            Platform::Mobile => &["ios", "android"],
            Platform::Web => &["web"],
        };
        if push.in_app {
            // Into each recipient's in-app inbox first (a redelivery adds nothing), and
            // live to their connections.
            let item = serde_json::json!({
                "id": envelope.id, "title": push.title, "body": push.body, "data": push.data,
                "createdAt": envelope.created_at,
            });
            let id = envelope.id.to_string();
            if let Err(e) = self.inbox.deliver(tenant, &users, &id, &item).await {
                return Outcome::retry(format!("adding to the in-app inboxes: {e}"));
            }
        }
        let devices = match self.devices.devices_of(tenant, &users, platforms).await {
            Ok(devices) => devices,
            Err(e) => return Outcome::retry(format!("reading the device registry: {e}")),
        };
        let mut settled = match self.ledger.settled(envelope, attempt, CHANNEL).await {
            Ok(settled) => settled,
            Err(e) => return Outcome::retry(e),
        };
        let mut routes = HashMap::new();
        for provider in [Provider::Apns, Provider::Fcm] {
            routes.insert(provider.name(), self.route(tenant, provider).await);
        }
        let sends: Vec<_> = devices
            .iter()
            .map(|device| {
                let earlier = settled.remove(&(device.user_id.clone(), device.token.clone()));
                self.device_outcome(envelope, push, device, earlier, attempt, &routes)
            })
            .collect();
        let mut deliveries: Vec<DeliveryOutcome> = futures_util::stream::iter(sends)
            .buffer_unordered(self.settings.parallel_devices.get())
            .collect()
            .await;
        for user in users {
            if push.in_app {
                // The inbox is a delivery of its own: a recipient without a device still
                // has the notification there.
                deliveries.push(DeliveryOutcome {
                    recipient: user.to_owned(),
                    target: INBOX.to_owned(),
                    outcome: Outcome::Delivered,
                    attempt,
                    reply: Some("added to the in-app inbox".to_owned()),
                });
            } else if !devices.iter().any(|d| d.user_id == user) {
                // Nowhere to deliver to: final, not a failure a retry or replay would mend.
                deliveries.push(DeliveryOutcome {
                    recipient: user.to_owned(),
                    target: String::new(),
                    outcome: Outcome::undeliverable(format!(
                        "no {} device registered",
                        push.platform.as_str()
                    )),
                    attempt,
                    reply: None,
                });
            }
        }
        Outcome::PerDelivery(Report {
            channel: CHANNEL,
            deliveries,
            template: None,
        })
    }

    async fn device_outcome(
        &self,
        envelope: &Envelope,
        push: &PushNotification,
        device: &Device,
        earlier: Option<DeliveryOutcome>,
        attempt: u32,
        routes: &HashMap<&'static str, Route>,
    ) -> DeliveryOutcome {
        if let Some(earlier) = earlier {
            return earlier;
        }
        let (outcome, reply) = self.push_to(envelope, push, device, routes).await;
        DeliveryOutcome {
            recipient: device.user_id.clone(),
            target: device.token.clone(),
            outcome,
            attempt,
            reply,
        }
    }
}

fn refusal(provider: Provider, said: &str) -> String {
    format!(
        "{} refused the tenant's credentials ({said}); set new ones with PUT /v1/providers/{}",
        provider.name().to_uppercase(),
        provider.name()
    )
}

#[async_trait]
impl Handler for PushHandler {
    async fn handle(&self, envelope: &Envelope, attempt: u32) -> Outcome {
        match &envelope.event {
            Event::Push(push) => self.deliver(envelope, push, attempt).await,
            other => Outcome::failed(format!("not a push event: {:?}", other.kind())),
        }
    }
}
