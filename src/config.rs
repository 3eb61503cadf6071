//! Layered configuration: the built-in `config/default.toml`, then `config/default.toml`
//! and `config/local.toml` from the configuration directory, then `HERALD__SECTION__KEY`
//! environment variables, with `DATABASE_URL` and `RABBITMQ_URL` honoured as the seed
//! systems use them. Everything is checked at start; an error names the bad key.

use crate::domain::EventKind;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The defaults, compiled in so that the binary runs with no files around it.
const BUILT_IN_DEFAULTS: &str = include_str!("../config/default.toml");

/// Every setting Herald reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP API.
    pub http: HttpSettings,
    /// The admin API.
    pub admin: AdminSettings,
    /// Per-tenant ingress rate limits.
    pub rate_limits: RateLimitSettings,
    /// The store (SQLite or PostgreSQL).
    pub database: DatabaseSettings,
    /// The broker events are queued on.
    pub broker: BrokerSettings,
    /// Email delivery.
    pub email: EmailSettings,
    /// Push delivery (APNs and FCM).
    pub push: PushSettings,
    /// What tenants' own providers may be.
    pub providers: ProvidersSettings,
    /// Real-time delivery over WebSocket.
    pub realtime: RealtimeSettings,
    /// How long stored data is kept.
    pub retention: RetentionSettings,
    /// Settings shared by every worker pool.
    pub workers: WorkerSettings,
    /// How much each dead-letter queue keeps.
    pub dead_letters: DeadLetterSettings,
    /// One queue per event kind.
    pub queues: QueuesSettings,
}

/// What tenants' own providers (`/v1/providers/...`) may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSettings {
    /// Lets tenants' endpoints (SMTP hosts, FCM token URIs, and later webhooks) be private,
    /// loopback or link-local addresses, and any token URI: for local relays in
    /// development. Off, a tenant cannot make Herald connect inward.
    pub allow_private_addresses: bool,
}

impl ProvidersSettings {
    /// Where outbound connections on a tenant's behalf may go.
    pub fn outbound(&self) -> crate::outbound::OutboundPolicy {
        crate::outbound::OutboundPolicy {
            allow_private_addresses: self.allow_private_addresses,
        }
    }
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Largest body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// The `Retry-After` of a 503.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

/// The admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// The admin bearer token; empty means the admin API is off.
    pub token: SecretString,
}

impl AdminSettings {
    /// The token, if one is set.
    pub fn token(&self) -> Option<SecretString> {
        let token = self.token.expose_secret();
        (!token.is_empty()).then(|| self.token.clone())
    }
}

/// Per-tenant ingress rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Events per second, for every tenant without a limit of its own.
    pub per_second: u32,
    /// Events at once above the rate.
    pub burst: u32,
    /// Tenants with limits of their own, by tenant id.
    #[serde(default)]
    pub tenants: std::collections::HashMap<String, RateLimit>,
}

impl RateLimitSettings {
    /// The limit of tenants without one of their own.
    pub fn default_limit(&self) -> RateLimit {
        RateLimit {
            per_second: self.per_second,
            burst: self.burst,
        }
    }
}

/// One rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Events per second.
    pub per_second: u32,
    /// Events at once above the rate.
    pub burst: u32,
}

/// The store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; may hold a password, so it is kept secret.
    pub url: SecretString,
}

/// Which broker Herald runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// The durable broker inside Herald, in a SQLite file.
    Embedded,
    /// An external RabbitMQ.
    Rabbitmq,
}

/// The broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// Which broker.
    pub kind: BrokerKind,
    /// Prepended to every exchange and queue name.
    pub prefix: String,
    /// How long a publish may wait for its confirmation.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// The embedded broker.
    pub embedded: EmbeddedSettings,
    /// RabbitMQ.
    pub rabbitmq: RabbitMqSettings,
}

/// The embedded broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSettings {
    /// Its SQLite file.
    pub path: PathBuf,
    /// How long a worker may hold a message before it is delivered again.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// How often idle consumers look for retries that came due.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

/// RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSettings {
    /// `amqp://user:password@host:port/vhost`; holds a password, so it is kept secret.
    pub url: SecretString,
    /// How many confirm-mode channels publishes are spread over.
    pub confirm_channels: usize,
    /// Declare quorum queues (for clusters) instead of classic ones.
    pub quorum_queues: bool,
    /// How long `herald migrate` waits for RabbitMQ to accept a connection before it
    /// fails (an init container may start before the broker does).
    #[serde(with = "humantime_serde")]
    pub migrate_wait: Duration,
}

/// Email delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// The default sender, as a mailbox (`Name <address>`).
    pub from: String,
    /// Where the file outbox writes `.eml` files.
    pub outbox_dir: PathBuf,
    /// The SMTP relay for tenants without one of their own; without any, the outbox.
    #[serde(default)]
    pub smtp: Option<crate::channels::email::RelaySettings>,
    /// Connections kept open to each relay.
    pub pool_size: u32,
    /// How long a relay may take to connect (greeting, TLS and login included), to take a
    /// write, or to answer a command.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Recipients one email event is sent to at once.
    pub parallel_recipients: usize,
    /// A CA certificate (PEM) trusted for relays besides the system's, for a relay with a
    /// certificate from a private CA.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Outbound limits, in messages per second (0: none).
    pub rate_limits: EmailRateLimits,
    /// How much one email may render to, and how long it may take.
    pub render: crate::channels::email::RenderLimits,
}

/// Outbound email limits, in messages per second; 0 means no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRateLimits {
    /// Per tenant, over all its relays.
    pub per_tenant: u32,
    /// Per relay (host and port), over all tenants.
    pub per_relay: u32,
}

/// Push delivery through APNs and FCM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// Where pushes go (as JSON lines) when the tenant has no provider for the device.
    pub outbox: PathBuf,
    /// How long one request to a provider may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Devices of one notification sent to at once.
    pub parallel_devices: usize,
    /// How long a tenant's credentials that a provider refused stay refused without
    /// asking the provider again (unless the tenant sets new ones).
    #[serde(with = "humantime_serde")]
    pub refused_credentials_for: Duration,
    /// A CA certificate (PEM) trusted for providers besides the system's.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// APNs.
    pub apns: ApnsSettings,
    /// FCM.
    pub fcm: FcmSettings,
    /// Outbound limits, in pushes per second (0: none).
    pub rate_limits: PushRateLimits,
}

/// APNs endpoints and the credentials of tenants without their own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsSettings {
    /// The production endpoint.
    pub url: String,
    /// The sandbox (development) endpoint.
    pub sandbox_url: String,
    /// Credentials for tenants without their own.
    #[serde(default)]
    pub credentials: Option<crate::channels::push::ApnsCredentials>,
}

/// FCM endpoints and the service account of tenants without their own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSettings {
    /// The FCM HTTP v1 API's base URL.
    pub url: String,
    /// Google's OAuth2 token endpoint; when unset, the service account's `token_uri`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// A service account JSON file for tenants without their own.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
}

/// Outbound push limits, in pushes per second; 0 means no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRateLimits {
    /// Per tenant and provider.
    pub per_tenant: u32,
    /// Per provider (APNs, FCM), over all tenants.
    pub per_provider: u32,
}

/// Real-time delivery over WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSettings {
    /// The topic exchange instances tell each other about users' news on (RabbitMQ).
    pub exchange: String,
    /// The lifetime of a token when the request names none.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// The longest lifetime a token may be given.
    #[serde(with = "humantime_serde")]
    pub token_ttl_max: Duration,
    /// How often a connection is pinged; one silent for three of these is closed.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How long a client may take to accept a frame before it is disconnected (to catch up
    /// by replay when it reconnects).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
}

/// How long stored data is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Audit records older than this are removed.
    #[serde(with = "humantime_serde")]
    pub audit: Duration,
    /// Delivery-ledger entries older than this are removed.
    #[serde(with = "humantime_serde")]
    pub ledger: Duration,
    /// Users' real-time events (what reconnecting clients replay) older than this are
    /// removed.
    #[serde(with = "humantime_serde")]
    pub realtime: Duration,
    /// How often the retention job runs.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
}

/// Settings shared by every worker pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Longest a handler may run before its message is retried.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// How long shutdown waits for in-flight messages.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// The bounds of every dead-letter queue: what an operator has to look at and replay,
/// kept long enough to do so, but never without limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// The most letters a dead-letter queue keeps; beyond it the oldest are dropped.
    pub max_length: u32,
    /// Letters dead for longer are dropped.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How often the bounds are applied.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
}

/// One queue per event kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesSettings {
    /// Chat messages.
    pub chat: QueueSettings,
    /// Push notifications.
    pub push: QueueSettings,
    /// Email notifications.
    pub email: QueueSettings,
    /// Audit events.
    pub audit: QueueSettings,
}

impl QueuesSettings {
    /// The settings of the queue for `kind`.
    pub fn of(&self, kind: EventKind) -> &QueueSettings {
        match kind {
            EventKind::Chat => &self.chat,
            EventKind::Push => &self.push,
            EventKind::Email => &self.email,
            EventKind::Audit => &self.audit,
        }
    }
}

/// One queue: where it is bound, how long and how much it holds, how it is worked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// The queue's name (before the prefix).
    pub name: String,
    /// The topic exchange it is bound to (before the prefix).
    pub exchange: String,
    /// The routing keys it is bound with.
    pub routing_keys: Vec<String>,
    /// How long a message may wait before it expires to the dead-letter queue.
    #[serde(with = "humantime_serde")]
    pub message_ttl: Duration,
    /// How many messages the queue holds before it refuses new ones.
    pub max_length: u32,
    /// How many messages the queue's pool handles at once.
    pub concurrency: usize,
    /// How many times a message is tried before it is dead-lettered.
    pub max_attempts: u32,
    /// The wait before each retry; the last entry repeats.
    #[serde(deserialize_with = "durations")]
    pub backoff: Vec<Duration>,
}

/// Reads a list of durations written as "5s", "1m".
fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let written: Vec<humantime_serde::Serde<Duration>> = Vec::deserialize(deserializer)?;
    Ok(written
        .into_iter()
        .map(humantime_serde::Serde::into_inner)
        .collect())
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable could not be read into the settings.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value was read but makes no sense.
    #[error("configuration key `{key}`: {problem}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl Settings {
    /// The real-time bus's exchange on RabbitMQ, under the broker's prefix.
    pub fn realtime_exchange(&self) -> String {
        format!("{}{}", self.broker.prefix, self.realtime.exchange)
    }

    /// Loads the settings from `config_dir` and the process environment.
    pub fn load(config_dir: &Path) -> Result<Settings, ConfigError> {
        Self::from_figment(Self::figment(config_dir))
    }

    /// The layered sources, lowest first.
    pub fn figment(config_dir: &Path) -> Figment {
        let mut figment = Figment::from(Toml::string(BUILT_IN_DEFAULTS))
            .merge(Toml::file(config_dir.join("default.toml")))
            .merge(Toml::file(config_dir.join("local.toml")));
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        if let Ok(url) = std::env::var("RABBITMQ_URL") {
            figment = figment
                .merge(Serialized::default("broker.rabbitmq.url", url))
                .merge(Serialized::default("broker.kind", "rabbitmq"));
        }
        figment.merge(Env::prefixed("HERALD__").split("__"))
    }

    /// Extracts and checks the settings.
    pub fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                problem: problem.to_owned(),
            })
        };
        if self
            .admin
            .token()
            .is_some_and(|t| t.expose_secret().len() < 16)
        {
            return invalid(
                "admin.token",
                "must be at least 16 characters, or empty to turn the admin API off",
            );
        }
        let limits = std::iter::once(("rate_limits".to_owned(), self.rate_limits.default_limit()))
            .chain(
                self.rate_limits
                    .tenants
                    .iter()
                    .map(|(id, l)| (format!("rate_limits.tenants.{id}"), *l)),
            );
        for (key, limit) in limits {
            if limit.per_second == 0 {
                return invalid(&format!("{key}.per_second"), "must be at least 1");
            }
        }
        if self.retention.every.is_zero() {
            return invalid("retention.every", "must be longer than zero");
        }
        if self.dead_letters.every.is_zero() {
            return invalid("dead_letters.every", "must be longer than zero");
        }
        if self.http.body_limit_bytes < 1024 {
            return invalid("http.body_limit_bytes", "must be at least 1024");
        }
        let db = self.database.url.expose_secret();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return invalid("database.url", "must start with sqlite: or postgres://");
        }
        let amqp = self.broker.rabbitmq.url.expose_secret();
        if !(amqp.starts_with("amqp://") || amqp.starts_with("amqps://")) {
            return invalid("broker.rabbitmq.url", "must start with amqp:// or amqps://");
        }
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return invalid(
                "email.from",
                "must be a mailbox such as 'Herald <no-reply@example.com>'",
            );
        }
        if let Some(relay) = &self.email.smtp
            && let Err(e) = relay.check()
        {
            return invalid(&format!("email.smtp.{}", e.field), &e.message);
        }
        if let Some(file) = &self.email.tls_ca_file
            && let Err(e) = crate::channels::tls::read_ca_file(file)
        {
            return invalid("email.tls_ca_file", &e);
        }
        if let Some(file) = &self.push.tls_ca_file
            && let Err(e) = crate::channels::tls::read_ca_file(file)
        {
            return invalid("push.tls_ca_file", &e);
        }
        if let Some(credentials) = &self.push.apns.credentials
            && let Err(e) = credentials.check()
        {
            return invalid(&format!("push.apns.credentials.{}", e.field), &e.message);
        }
        if let Some(file) = &self.push.fcm.service_account_file
            && let Err(e) = crate::channels::push::FcmCredentials::read_file(file)
        {
            return invalid("push.fcm.service_account_file", &e);
        }
        for (key, url) in [
            ("push.apns.url", &self.push.apns.url),
            ("push.apns.sandbox_url", &self.push.apns.sandbox_url),
            ("push.fcm.url", &self.push.fcm.url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid(key, "must be an http(s) URL");
            }
        }
        if self.realtime.heartbeat.is_zero() || self.realtime.send_timeout.is_zero() {
            return invalid(
                "realtime.heartbeat",
                "heartbeat and send_timeout must be longer than zero",
            );
        }
        if self.push.parallel_devices == 0 {
            return invalid("push.parallel_devices", "must be at least 1");
        }
        if self.email.pool_size == 0 {
            return invalid("email.pool_size", "must be at least 1");
        }
        if self.email.parallel_recipients == 0 {
            return invalid("email.parallel_recipients", "must be at least 1");
        }
        if self.broker.rabbitmq.confirm_channels == 0 {
            return invalid("broker.rabbitmq.confirm_channels", "must be at least 1");
        }
        let mut names = Vec::new();
        for kind in EventKind::ALL {
            let q = self.queues.of(kind);
            let key = |field: &str| format!("queues.{}.{field}", kind.as_str());
            let checks = [
                (q.name.is_empty(), "name", "must not be empty"),
                (q.exchange.is_empty(), "exchange", "must not be empty"),
                (
                    q.routing_keys.is_empty(),
                    "routing_keys",
                    "must list at least one key",
                ),
                (q.max_length == 0, "max_length", "must be at least 1"),
                (q.concurrency == 0, "concurrency", "must be at least 1"),
                (q.max_attempts == 0, "max_attempts", "must be at least 1"),
                (
                    q.backoff.is_empty(),
                    "backoff",
                    "must list at least one delay",
                ),
                (
                    q.message_ttl.is_zero(),
                    "message_ttl",
                    "must be longer than zero",
                ),
                (names.contains(&&q.name), "name", "is used by another queue"),
            ];
            if let Some((_, field, problem)) = checks.iter().find(|(bad, ..)| *bad) {
                return invalid(&key(field), problem);
            }
            names.push(&q.name);
        }
        Ok(())
    }
}

/// A URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!(
                "{}{user}:***{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads the settings inside a jail: a scratch working directory and environment.
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
    fn load(env: &[(&str, &str)]) -> Result<Settings, String> {
        let mut result = Err(String::new());
        figment::Jail::expect_with(|jail| {
            for (k, v) in env {
                jail.set_env(k, v);
            }
            result = Settings::load(Path::new("config")).map_err(|e| e.to_string());
            Ok(())
        });
        result
    }

    #[test]
    fn the_built_in_defaults_run_on_the_embedded_broker() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.broker.kind, BrokerKind::Embedded);
        assert_eq!(settings.queues.chat.max_length, 100_000);
        assert_eq!(
            settings.queues.audit.message_ttl,
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(settings.http.listen.port(), 8080);
    }

    #[test]
    fn environment_variables_override_nested_keys_and_rabbitmq_url_selects_rabbitmq() {
        let settings = load(&[
            ("HERALD__QUEUES__EMAIL__CONCURRENCY", "3"),
            ("RABBITMQ_URL", "amqp://u:p@rabbit:5672/%2f"),
            ("DATABASE_URL", "postgres://herald@db/herald"),
        ])
        .unwrap();
        assert_eq!(settings.queues.email.concurrency, 3);
        assert_eq!(settings.broker.kind, BrokerKind::Rabbitmq);
        assert_eq!(
            settings.database.url.expose_secret(),
            "postgres://herald@db/herald"
        );
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key() {
        // figment names a key from the environment as the variable spells it.
        let err = load(&[("HERALD__QUEUES__PUSH__CONCURRENCY", "many")]).unwrap_err();
        assert!(
            err.to_lowercase().contains("queues.push.concurrency"),
            "{err}"
        );
        let err = load(&[("HERALD__QUEUES__PUSH__MAX_ATTEMPTS", "0")]).unwrap_err();
        assert!(err.contains("queues.push.max_attempts"), "{err}");
        let err = load(&[("HERALD__HTTP__LISTNE", "x")]).unwrap_err();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let settings = load(&[("RABBITMQ_URL", "amqp://u:hunter2@rabbit/%2f")]).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(
            redact_url("amqp://u:hunter2@rabbit/%2f"),
            "amqp://u:***@rabbit/%2f"
        );
        assert_eq!(
            redact_url("sqlite://data/herald.db"),
            "sqlite://data/herald.db"
        );
    }
}
