//! Layered configuration: the built-in `config/default.toml`, then `config/default.toml`
//! and `config/local.toml` from the configuration directory, then `HERALD__SECTION__KEY`
//! environment variables, with `DATABASE_URL` and `RABBITMQ_URL` honoured as the seed
//! systems use them.
//!
//! Parsed, not validated: figment reads the layers into the `raw` types, which mirror
//! the files and take any value of the right type; then each section parses itself into the
//! ready values Herald runs with: the sender a `Mailbox`, counts that cannot be zero as
//! `NonZero` integers, the queues a [`Topology`] whose retry
//! [`Backoff`](crate::broker::Backoff)s cannot be empty, URLs whose scheme is
//! known, and the extra CA files and provider credentials read and checked once
//! ([`ExtraCa`](crate::channels::tls::ExtraCa), [`ApnsKey`](crate::channels::push::ApnsKey),
//! [`FcmServiceAccount`](crate::channels::push::FcmServiceAccount)). A section notes what
//! is wrong under its dotted key and goes on, so that Herald, when it refuses to start,
//! names every bad key at once, one per line ([`ConfigError::Invalid`]). A value of the
//! wrong type or an unknown key is figment's to report, and figment stops at the first.
//!
//! A raw layer rather than `#[serde(try_from)]` newtypes, because serde stops at the first
//! error, and because some values are made from more than one key (the real-time bus from
//! the broker's kind and prefix) or from files.
//!
//! Dependencies point one way, as in zero-to-production's `configuration.rs`: this module
//! knows the types it builds, and no component imports it. A component that takes a
//! section owns its ready type (`EmailSettings` is the email channel's, `RabbitMqSettings`
//! the RabbitMQ broker's), re-exported here; the sections only the wiring ([`crate::app`]
//! and `main`) reads are defined here. A type with nothing to check (`EmbeddedSettings`,
//! `RenderLimits`, the outbound rate limits) is read as it is. `scripts/module-graph.py`
//! fails if this module is ever on a cycle again.

mod raw;

pub use crate::broker::amqp::RabbitMqSettings;
pub use crate::broker::embedded::EmbeddedSettings;
pub use crate::channels::email::EmailSettings;
pub use crate::channels::push::PushSettings;
pub use crate::realtime::RealtimeSettings;
pub use crate::retention::RetentionSettings;
pub use crate::tenants::limits::{RateLimit, RateLimitSettings};

use crate::broker::Topology;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The defaults, compiled in so that the binary runs with no files around it.
const BUILT_IN_DEFAULTS: &str = include_str!("../../config/default.toml");

/// Every setting Herald reads, ready to use.
#[derive(Debug, Clone)]
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
    /// The real-time bus's exchange on RabbitMQ (`realtime.exchange`), under the broker's
    /// prefix.
    realtime_exchange: String,
    /// How long stored data is kept.
    pub retention: RetentionSettings,
    /// Settings shared by every worker pool.
    pub workers: WorkerSettings,
    /// How often dead-letter queues are kept within their bounds.
    pub dead_letters: DeadLetterSettings,
    /// The queues (`queues.*`, with `broker.prefix` and `dead_letters`' bounds): one per
    /// event kind, each with its dead-letter queue.
    pub topology: Topology,
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
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Largest body accepted, in bytes (at least 1024).
    pub body_limit_bytes: usize,
    /// The `Retry-After` of a 503.
    pub retry_after: Duration,
    /// Which browser origins may call the API (`http.cors_origins`).
    pub allowed_origins: crate::http::cors::AllowedOrigins,
}

/// The admin API.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// The admin bearer token, at least 16 characters; none means the admin API is off.
    token: Option<SecretString>,
}

impl AdminSettings {
    /// The token, if one is set.
    pub fn token(&self) -> Option<SecretString> {
        self.token.clone()
    }
}

/// The store.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite:...` or `postgres://...`; may hold a password, so it is kept secret.
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
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Which broker.
    pub kind: BrokerKind,
    /// Prepended to every exchange and queue name.
    pub prefix: String,
    /// How long a publish may wait for its confirmation.
    pub publish_timeout: Duration,
    /// The tenant of events published straight to the broker that name none, for
    /// single-tenant services (seed 000's); `None`: such events are rejected.
    pub default_tenant: Option<crate::domain::TenantId>,
    /// The embedded broker.
    pub embedded: EmbeddedSettings,
    /// RabbitMQ.
    pub rabbitmq: RabbitMqSettings,
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

/// The dead-letter queues: their bounds are the topology's, this is how often the pools
/// apply them.
#[derive(Debug, Clone)]
pub struct DeadLetterSettings {
    /// How often the bounds are applied; never zero.
    pub every: Duration,
}

/// One bad key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}`: {problem}")]
pub struct Problem {
    /// The dotted key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable could not be read into the settings.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// Values were read but make no sense: every one of them, one per line.
    #[error("{}", one_per_line(.0))]
    Invalid(Vec<Problem>),
}

fn one_per_line(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl Settings {
    /// The real-time bus's exchange on RabbitMQ, under the broker's prefix.
    pub fn realtime_exchange(&self) -> String {
        self.realtime_exchange.clone()
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

    /// Reads the settings and parses every section; the problems of all of them, if any.
    pub fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let raw: raw::Settings = figment.extract().map_err(Box::new)?;
        raw.parse().map_err(ConfigError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;
    use secrecy::ExposeSecret;

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
        let queue = |kind| settings.topology.queue(kind);
        assert_eq!(queue(EventKind::Chat).max_length.get(), 100_000);
        assert_eq!(
            queue(EventKind::Audit).message_ttl,
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
        assert_eq!(
            settings.topology.queue(EventKind::Email).concurrency.get(),
            3
        );
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
    fn bad_keys_in_different_sections_are_all_reported_with_their_keys() {
        let err = load(&[
            ("HERALD__EMAIL__FROM", "not a mailbox"),
            ("HERALD__QUEUES__CHAT__CONCURRENCY", "0"),
        ])
        .unwrap_err();
        assert!(
            err.contains(
                "configuration key `email.from`: must be a mailbox such as 'Herald <no-reply@example.com>'"
            ),
            "{err}"
        );
        assert!(
            err.contains("configuration key `queues.chat.concurrency`: must be at least 1"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 2, "one line each: {err}");
    }

    #[test]
    fn files_nested_keys_and_every_bad_key_of_a_section_are_reported() {
        let err = load(&[
            ("HERALD__EMAIL__TLS_CA_FILE", "/nonexistent/ca.pem"),
            (
                "HERALD__PUSH__FCM__SERVICE_ACCOUNT_FILE",
                "/nonexistent/fcm.json",
            ),
            ("HERALD__PUSH__APNS__CREDENTIALS__KEY_ID", "KEY1"),
            ("HERALD__PUSH__APNS__CREDENTIALS__TEAM_ID", "TEAM1"),
            ("HERALD__PUSH__APNS__CREDENTIALS__TOPIC", "com.example"),
            ("HERALD__PUSH__APNS__CREDENTIALS__PRIVATE_KEY", "not a key"),
            ("HERALD__REALTIME__HEARTBEAT", "0s"),
            ("HERALD__REALTIME__SEND_TIMEOUT", "0s"),
            ("HERALD__QUEUES__PUSH__NAME", "chat.messages"),
            ("HERALD__QUEUES__PUSH__BACKOFF", "[]"),
        ])
        .unwrap_err();
        let expected = [
            "`email.tls_ca_file`: cannot read /nonexistent/ca.pem",
            "`push.apns.credentials.privateKey`: ",
            "`push.fcm.service_account_file`: cannot read /nonexistent/fcm.json",
            "`realtime.heartbeat`: must be longer than zero",
            "`realtime.send_timeout`: must be longer than zero",
            "`queues.push.name`: is used by another queue",
            "`queues.push.backoff`: must list at least one delay",
        ];
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{err}");
        for (line, expected) in lines.iter().zip(expected) {
            assert!(line.contains(expected), "{line} should say {expected}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let settings = load(&[("RABBITMQ_URL", "amqp://u:hunter2@rabbit/%2f")]).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
