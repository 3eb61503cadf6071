//! The configuration as the files and variables write it: serde types that take any value
//! of the right type, each able to parse itself into its ready section, noting every
//! problem under its key rather than stopping at the first.

use super::{
    AdminSettings, BrokerKind, BrokerSettings, DatabaseSettings, DeadLetterSettings, HttpSettings,
    Problem, ProvidersSettings, WorkerSettings,
};
use crate::broker::amqp::RabbitMqSettings;
use crate::broker::embedded::EmbeddedSettings;
use crate::broker::{Backoff, QueueSpec, Topology};
use crate::channels::email::{EmailRateLimits, EmailSettings, RelaySettings};
use crate::channels::push::{
    self, ApnsCredentials, Credentials, FcmServiceAccount, ProviderUrl, PushRateLimits,
    PushSettings,
};
use crate::channels::tls::ExtraCa;
use crate::domain::{EventKind, TenantId};
use crate::realtime::RealtimeSettings;
use crate::retention::RetentionSettings;
use crate::templates::RenderLimits;
use crate::tenants::limits::{RateLimit, RateLimitSettings};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// Every problem found so far, each under its dotted key.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// Where the problems of the section at `key` go.
    fn section(&mut self, key: impl Into<String>) -> Section<'_> {
        Section {
            key: key.into(),
            problems: self,
        }
    }
}

/// One section's view of the problems: it names its keys relative to itself.
struct Section<'a> {
    key: String,
    problems: &'a mut Problems,
}

impl Section<'_> {
    /// The section at `field` inside this one.
    fn section(&mut self, field: &str) -> Section<'_> {
        let key = format!("{}.{field}", self.key);
        self.problems.section(key)
    }

    /// Notes `problem` under `field`.
    fn note(&mut self, field: &str, problem: impl Display) {
        self.problems.0.push(Problem {
            key: format!("{}.{field}", self.key),
            problem: problem.to_string(),
        });
    }

    /// `value`, or nothing once what is wrong with it is noted under `field`.
    fn check<T>(&mut self, field: &str, value: Result<T, impl Display>) -> Option<T> {
        value.map_err(|problem| self.note(field, problem)).ok()
    }

    /// A setting that may be left out: absent, or present and parsed by `parse`, which
    /// may name a key below `field` as the bad one.
    fn check_optional<T, U>(
        &mut self,
        field: &str,
        value: Option<T>,
        parse: impl FnOnce(T) -> Result<U, (Option<&'static str>, String)>,
    ) -> Option<Option<U>> {
        match value.map(parse) {
            None => Some(None),
            Some(Ok(parsed)) => Some(Some(parsed)),
            Some(Err((below, problem))) => {
                match below {
                    Some(below) => self.note(&format!("{field}.{below}"), problem),
                    None => self.note(field, problem),
                }
                None
            }
        }
    }

    /// A count that must not be zero.
    fn at_least_one<T, N: TryFrom<T>>(&mut self, field: &str, count: T) -> Option<N> {
        self.check(field, N::try_from(count).map_err(|_| "must be at least 1"))
    }

    /// A duration that must not be zero.
    fn longer_than_zero(&mut self, field: &str, duration: Duration) -> Option<Duration> {
        let longer = (!duration.is_zero()).then_some(duration);
        self.check(field, longer.ok_or("must be longer than zero"))
    }

    /// Text that must not be empty.
    fn not_empty(&mut self, field: &str, text: String) -> Option<String> {
        let given = (!text.is_empty()).then_some(text);
        self.check(field, given.ok_or("must not be empty"))
    }
}

/// Every setting, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    http: Http,
    admin: Admin,
    rate_limits: RateLimits,
    database: Database,
    broker: Broker,
    email: Email,
    push: Push,
    providers: ProvidersSettings,
    realtime: Realtime,
    retention: Retention,
    workers: WorkerSettings,
    dead_letters: DeadLetters,
    queues: Queues,
}

impl Settings {
    /// The ready settings, or every problem of every section.
    pub(super) fn parse(self) -> Result<super::Settings, Vec<Problem>> {
        let mut problems = Problems::default();
        let realtime_exchange = format!("{}{}", self.broker.prefix, self.realtime.exchange);
        let prefix = self.broker.prefix.clone();
        let dead_letter_bounds = (self.dead_letters.max_length, self.dead_letters.max_age);
        let http = self.http.parse(&mut problems.section("http"));
        let admin = self.admin.parse(&mut problems.section("admin"));
        let rate_limits = self.rate_limits.parse(&mut problems.section("rate_limits"));
        let database = self.database.parse(&mut problems.section("database"));
        let broker = self.broker.parse(&mut problems.section("broker"));
        let email = self.email.parse(&mut problems.section("email"));
        let push = self.push.parse(&mut problems.section("push"));
        let realtime = self.realtime.parse(&mut problems.section("realtime"));
        let retention = self.retention.parse(&mut problems.section("retention"));
        let dead_letters = self
            .dead_letters
            .parse(&mut problems.section("dead_letters"));
        let topology = self
            .queues
            .parse(&mut problems, &prefix, dead_letter_bounds);
        let ready = || {
            Some(super::Settings {
                http: http?,
                admin: admin?,
                rate_limits: rate_limits?,
                database: database?,
                broker: broker?,
                email: email?,
                push: push?,
                providers: self.providers,
                realtime: realtime?,
                realtime_exchange,
                retention: retention?,
                workers: self.workers,
                dead_letters: dead_letters?,
                topology: topology?,
            })
        };
        match ready() {
            Some(settings) if problems.0.is_empty() => Ok(settings),
            _ => Err(problems.0),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Http {
    listen: SocketAddr,
    body_limit_bytes: usize,
    #[serde(with = "humantime_serde")]
    retry_after: Duration,
    #[serde(default)]
    cors_origins: Vec<String>,
}

impl Http {
    fn parse(self, section: &mut Section<'_>) -> Option<HttpSettings> {
        let body_limit_bytes = section.check(
            "body_limit_bytes",
            (self.body_limit_bytes >= 1024)
                .then_some(self.body_limit_bytes)
                .ok_or("must be at least 1024"),
        );
        let allowed_origins = section.check(
            "cors_origins",
            crate::http::cors::AllowedOrigins::parse(&self.cors_origins),
        );
        Some(HttpSettings {
            listen: self.listen,
            body_limit_bytes: body_limit_bytes?,
            retry_after: self.retry_after,
            allowed_origins: allowed_origins?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Admin {
    token: SecretString,
}

impl Admin {
    fn parse(self, section: &mut Section<'_>) -> Option<AdminSettings> {
        let token = match self.token.expose_secret().len() {
            0 => Ok(None),
            1..16 => Err("must be at least 16 characters, or empty to turn the admin API off"),
            _ => Ok(Some(self.token)),
        };
        let token = section.check("token", token)?;
        Some(AdminSettings { token })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimits {
    per_second: u32,
    burst: u32,
    /// By tenant id, in order, so that problems are reported in order.
    #[serde(default)]
    tenants: BTreeMap<String, Limit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    per_second: u32,
    burst: u32,
}

impl Limit {
    fn parse(self, section: &mut Section<'_>) -> Option<RateLimit> {
        let per_second = section.at_least_one("per_second", self.per_second)?;
        Some(RateLimit::new(per_second, self.burst))
    }
}

impl RateLimits {
    fn parse(self, section: &mut Section<'_>) -> Option<RateLimitSettings> {
        let default = Limit {
            per_second: self.per_second,
            burst: self.burst,
        }
        .parse(section);
        let tenants: Vec<_> = self
            .tenants
            .into_iter()
            .map(|(id, limit)| {
                let limit = limit.parse(&mut section.section(&format!("tenants.{id}")));
                limit.map(|limit| (id, limit))
            })
            .collect();
        let tenants: Vec<_> = tenants.into_iter().collect::<Option<_>>()?;
        Some(RateLimitSettings {
            default: default?,
            // An id that no tenant can have is passed over, as it always was: it limits
            // no one.
            tenants: tenants
                .into_iter()
                .filter_map(|(id, limit)| Some((TenantId::parse(&id).ok()?, limit)))
                .collect(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Database {
    url: SecretString,
}

impl Database {
    fn parse(self, section: &mut Section<'_>) -> Option<DatabaseSettings> {
        let url = self.url.expose_secret();
        let known = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        section.check(
            "url",
            known
                .then_some(())
                .ok_or("must start with sqlite: or postgres://"),
        )?;
        Some(DatabaseSettings { url: self.url })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Broker {
    kind: BrokerKind,
    prefix: String,
    #[serde(with = "humantime_serde")]
    publish_timeout: Duration,
    #[serde(default)]
    default_tenant: Option<String>,
    embedded: EmbeddedSettings,
    rabbitmq: Rabbitmq,
}

impl Broker {
    fn parse(self, section: &mut Section<'_>) -> Option<BrokerSettings> {
        let default_tenant = match self.default_tenant {
            None => Some(None),
            Some(id) => section
                .check("default_tenant", crate::domain::TenantId::parse(&id))
                .map(Some),
        };
        let rabbitmq = self.rabbitmq.parse(&mut section.section("rabbitmq"))?;
        Some(BrokerSettings {
            kind: self.kind,
            prefix: self.prefix,
            publish_timeout: self.publish_timeout,
            default_tenant: default_tenant?,
            embedded: self.embedded,
            rabbitmq,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rabbitmq {
    url: SecretString,
    #[serde(default)]
    management_url: Option<SecretString>,
    confirm_channels: usize,
    quorum_queues: bool,
    #[serde(with = "humantime_serde")]
    migrate_wait: Duration,
}

impl Rabbitmq {
    fn parse(self, section: &mut Section<'_>) -> Option<RabbitMqSettings> {
        let url = self.url.expose_secret();
        let known = url.starts_with("amqp://") || url.starts_with("amqps://");
        let url = section.check(
            "url",
            known
                .then_some(self.url)
                .ok_or("must start with amqp:// or amqps://"),
        );
        let confirm_channels = section.at_least_one("confirm_channels", self.confirm_channels);
        let management_url = match self.management_url {
            None => Some(None),
            Some(given) => {
                let text = given.expose_secret();
                let known = text.starts_with("http://") || text.starts_with("https://");
                section
                    .check(
                        "management_url",
                        known
                            .then_some(given)
                            .ok_or("must start with http:// or https://"),
                    )
                    .map(Some)
            }
        };
        Some(RabbitMqSettings {
            url: url?,
            management_url: management_url?,
            confirm_channels: confirm_channels?,
            quorum_queues: self.quorum_queues,
            migrate_wait: self.migrate_wait,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Email {
    from: String,
    outbox_dir: PathBuf,
    #[serde(default)]
    smtp: Option<RelaySettings>,
    pool_size: u32,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    parallel_recipients: usize,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    rate_limits: EmailRateLimits,
    render: RenderLimits,
}

impl Email {
    fn parse(self, section: &mut Section<'_>) -> Option<EmailSettings> {
        let from = section.check(
            "from",
            self.from
                .parse()
                .map_err(|_| "must be a mailbox such as 'Herald <no-reply@example.com>'"),
        );
        let smtp = section.check_optional("smtp", self.smtp, |relay| match relay.check() {
            Ok(()) => Ok(relay),
            Err(e) => Err((Some(e.field), e.message)),
        });
        let pool_size = section.at_least_one("pool_size", self.pool_size);
        let parallel_recipients =
            section.at_least_one("parallel_recipients", self.parallel_recipients);
        let extra_ca = section.check_optional("tls_ca_file", self.tls_ca_file, |file| {
            ExtraCa::read(&file).map_err(|e| (None, e))
        });
        Some(EmailSettings {
            from: from?,
            outbox_dir: self.outbox_dir,
            smtp: smtp?,
            pool_size: pool_size?,
            timeout: self.timeout,
            parallel_recipients: parallel_recipients?,
            extra_ca: extra_ca?,
            rate_limits: self.rate_limits,
            render: self.render,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    outbox: PathBuf,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    parallel_devices: usize,
    #[serde(with = "humantime_serde")]
    refused_credentials_for: Duration,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    apns: Apns,
    fcm: Fcm,
    rate_limits: PushRateLimits,
}

impl Push {
    fn parse(self, section: &mut Section<'_>) -> Option<PushSettings> {
        let parallel_devices = section.at_least_one("parallel_devices", self.parallel_devices);
        let extra_ca = section.check_optional("tls_ca_file", self.tls_ca_file, |file| {
            ExtraCa::read(&file).map_err(|e| (None, e))
        });
        let apns = self.apns.parse(&mut section.section("apns"));
        let fcm = self.fcm.parse(&mut section.section("fcm"));
        Some(PushSettings {
            outbox: self.outbox,
            timeout: self.timeout,
            parallel_devices: parallel_devices?,
            refused_credentials_for: self.refused_credentials_for,
            extra_ca: extra_ca?,
            apns: apns?,
            fcm: fcm?,
            rate_limits: self.rate_limits,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Apns {
    url: String,
    sandbox_url: String,
    #[serde(default)]
    credentials: Option<ApnsCredentials>,
}

impl Apns {
    fn parse(self, section: &mut Section<'_>) -> Option<push::ApnsSettings> {
        let url = section.check("url", ProviderUrl::parse(&self.url));
        let sandbox_url = section.check("sandbox_url", ProviderUrl::parse(&self.sandbox_url));
        let credentials = section.check_optional("credentials", self.credentials, |c| {
            c.ready().map_err(|e| (Some(e.field), e.message))
        });
        Some(push::ApnsSettings {
            url: url?,
            sandbox_url: sandbox_url?,
            credentials: credentials?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fcm {
    url: String,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    service_account_file: Option<PathBuf>,
}

impl Fcm {
    fn parse(self, section: &mut Section<'_>) -> Option<push::FcmSettings> {
        let url = section.check("url", ProviderUrl::parse(&self.url));
        let service_account =
            section.check_optional("service_account_file", self.service_account_file, |file| {
                FcmServiceAccount::read_file(&file).map_err(|e| (None, e))
            });
        Some(push::FcmSettings {
            url: url?,
            token_url: self.token_url,
            service_account: service_account?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Realtime {
    exchange: String,
    #[serde(with = "humantime_serde")]
    token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    token_ttl_max: Duration,
    #[serde(with = "humantime_serde")]
    heartbeat: Duration,
    #[serde(with = "humantime_serde")]
    send_timeout: Duration,
    member_page: usize,
}

impl Realtime {
    fn parse(self, section: &mut Section<'_>) -> Option<RealtimeSettings> {
        let heartbeat = section.longer_than_zero("heartbeat", self.heartbeat);
        let send_timeout = section.longer_than_zero("send_timeout", self.send_timeout);
        let member_page = section.at_least_one("member_page", self.member_page);
        Some(RealtimeSettings {
            token_ttl: self.token_ttl,
            token_ttl_max: self.token_ttl_max,
            heartbeat: heartbeat?,
            send_timeout: send_timeout?,
            member_page: member_page?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    #[serde(with = "humantime_serde")]
    audit: Duration,
    #[serde(with = "humantime_serde")]
    ledger: Duration,
    #[serde(with = "humantime_serde")]
    realtime: Duration,
    #[serde(with = "humantime_serde")]
    every: Duration,
}

impl Retention {
    fn parse(self, section: &mut Section<'_>) -> Option<RetentionSettings> {
        let every = section.longer_than_zero("every", self.every)?;
        Some(RetentionSettings {
            audit: self.audit,
            ledger: self.ledger,
            realtime: self.realtime,
            every,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetters {
    max_length: u32,
    #[serde(with = "humantime_serde")]
    max_age: Duration,
    #[serde(with = "humantime_serde")]
    every: Duration,
}

impl DeadLetters {
    fn parse(self, section: &mut Section<'_>) -> Option<DeadLetterSettings> {
        let every = section.longer_than_zero("every", self.every)?;
        Some(DeadLetterSettings { every })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Queues {
    chat: Queue,
    push: Queue,
    email: Queue,
    audit: Queue,
    update: Queue,
}

impl Queues {
    /// The topology: each queue under `prefix`, its dead-letter queue kept within
    /// `dead_letter_bounds` (the most letters, and the longest).
    fn parse(
        self,
        problems: &mut Problems,
        prefix: &str,
        dead_letter_bounds: (u32, Duration),
    ) -> Option<Topology> {
        let mut names = Vec::new();
        // Every queue is parsed, so that the problems of all are noted, before any missing
        // one makes the topology missing.
        let queues: Vec<_> = [
            (EventKind::Chat, self.chat),
            (EventKind::Push, self.push),
            (EventKind::Email, self.email),
            (EventKind::Audit, self.audit),
            (EventKind::Update, self.update),
        ]
        .into_iter()
        .map(|(kind, queue)| {
            let section = &mut problems.section(format!("queues.{}", kind.as_str()));
            queue.parse(kind, section, &mut names, prefix, dead_letter_bounds)
        })
        .collect();
        let queues = queues.into_iter().collect::<Option<_>>()?;
        Some(Topology {
            queues,
            unrouted: format!("{prefix}unrouted"),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Queue {
    name: String,
    exchange: String,
    routing_keys: Vec<String>,
    #[serde(with = "humantime_serde")]
    message_ttl: Duration,
    max_length: u32,
    concurrency: usize,
    max_attempts: u32,
    #[serde(deserialize_with = "durations")]
    backoff: Vec<Duration>,
}

impl Queue {
    /// The queue of `kind`, under `prefix`, with its dead-letter queue's bounds; its name
    /// must not be among `names`, the queues' before it, and is added to them.
    fn parse(
        self,
        kind: EventKind,
        section: &mut Section<'_>,
        names: &mut Vec<String>,
        prefix: &str,
        (dead_letter_max_length, dead_letter_max_age): (u32, Duration),
    ) -> Option<QueueSpec> {
        let name = section.not_empty("name", self.name).and_then(|name| {
            let taken = names.contains(&name);
            names.push(name.clone());
            section.check(
                "name",
                (!taken).then_some(name).ok_or("is used by another queue"),
            )
        });
        let exchange = section.not_empty("exchange", self.exchange);
        let routing_keys = section.check(
            "routing_keys",
            (!self.routing_keys.is_empty())
                .then_some(self.routing_keys)
                .ok_or("must list at least one key"),
        );
        let max_length = section.at_least_one("max_length", self.max_length);
        let concurrency = section.at_least_one("concurrency", self.concurrency);
        let max_attempts = section.at_least_one("max_attempts", self.max_attempts);
        let backoff = section.check(
            "backoff",
            Backoff::new(self.backoff).ok_or("must list at least one delay"),
        );
        let message_ttl = section.longer_than_zero("message_ttl", self.message_ttl);
        let name = name?;
        Some(QueueSpec {
            kind,
            name: format!("{prefix}{name}"),
            configured_name: name,
            exchange: format!("{prefix}{}", exchange?),
            routing_keys: routing_keys?,
            message_ttl: message_ttl?,
            max_length: max_length?,
            concurrency: concurrency?,
            max_attempts: max_attempts.map(NonZeroU32::get)?,
            backoff: backoff?,
            dead_letter_max_length: u64::from(dead_letter_max_length),
            dead_letter_max_age,
        })
    }
}

/// Reads a list of durations written as "5s", "1m".
fn durations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    let written: Vec<humantime_serde::Serde<Duration>> = Vec::deserialize(deserializer)?;
    Ok(written
        .into_iter()
        .map(humantime_serde::Serde::into_inner)
        .collect())
}
