//! What the integration tests share: settings isolated per test (a temporary directory, a
//! unique broker prefix, port 0), a running Herald, and access to the real RabbitMQ and
//! PostgreSQL.
//!
//! A test that needs RabbitMQ or PostgreSQL carries `#[ignore = "needs RabbitMQ on ..."]`,
//! so that a plain `cargo nextest run` counts it as skipped (and `cargo test` says why)
//! rather than passing without having run; `--run-ignored all` (the README's command, and
//! CI's) runs it, and a service that does not answer then fails it loudly, saying which
//! one and where.

pub mod accounting;
pub mod seeds;
pub mod smtp_relay;
pub mod socket;

use figment::providers::Serialized;
use herald::app::{Herald, Roles};
use herald::config::{BrokerKind, Settings};
use herald::shutdown::Shutdown;
use secrecy::ExposeSecret;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

/// An HTTP client for talking to Herald (rustls needs its provider chosen first).
pub fn http_client() -> reqwest::Client {
    herald::channels::tls::install_default_provider();
    reqwest::Client::new()
}

/// A tool a test needs is missing (schemathesis, aiosmtpd, the Node client's packages):
/// under `CI=true` the test fails with `message`, since CI installs every tool; elsewhere
/// it says `SKIPPED: message` and the caller ends the test early.
pub fn tool_missing(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{message}; CI requires it");
    }
    eprintln!("SKIPPED: {message}");
}

/// The RabbitMQ the tests use.
pub fn rabbitmq_url() -> String {
    std::env::var("HERALD_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Whether a TCP listener answers at `host:port`.
pub fn reachable(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        })
}

/// Fails the test, saying why, when the tests' RabbitMQ does not answer: a test that
/// needs it runs only when asked to (`--run-ignored`), and then it must be there.
pub fn require_rabbitmq() {
    require_rabbitmq_at(&rabbitmq_url());
}

/// Fails the test, saying why, when nothing answers at the RabbitMQ of `url`.
fn require_rabbitmq_at(url: &str) {
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .map(|a| a.rsplit('@').next().unwrap_or(a).to_owned())
        .unwrap_or_default();
    assert!(
        reachable(&authority),
        "this test needs RabbitMQ, and nothing answers at {authority}: start it, or point \
         HERALD_TEST_RABBITMQ_URL at one"
    );
}

/// A prefix no other test uses, so that tests sharing a broker never see each other.
pub fn unique_prefix() -> String {
    format!("t{}.", uuid::Uuid::now_v7().simple())
}

/// Settings for one test: its own directory, prefix and port 0, on `broker`, with
/// `overrides` (dotted keys) on top.
pub fn settings(
    broker: BrokerKind,
    dir: &Path,
    prefix: &str,
    overrides: &[(&str, &str)],
) -> Settings {
    let mut figment = Settings::figment(Path::new("/nonexistent"))
        .merge(Serialized::default("http.listen", "127.0.0.1:0"))
        .merge(Serialized::default("broker.prefix", prefix))
        .merge(Serialized::default(
            "broker.embedded.path",
            dir.join("broker.db").display().to_string(),
        ))
        .merge(Serialized::default("broker.embedded.poll_interval", "50ms"))
        .merge(Serialized::default(
            "database.url",
            format!("sqlite://{}", dir.join("herald.db").display()),
        ))
        .merge(Serialized::default(
            "email.outbox_dir",
            dir.join("outbox").display().to_string(),
        ))
        .merge(Serialized::default(
            "push.outbox",
            dir.join("outbox/push.jsonl").display().to_string(),
        ));
    figment = match broker {
        BrokerKind::Embedded => figment.merge(Serialized::default("broker.kind", "embedded")),
        BrokerKind::Rabbitmq => figment
            .merge(Serialized::default("broker.kind", "rabbitmq"))
            .merge(Serialized::default("broker.rabbitmq.url", rabbitmq_url())),
    };
    for (key, value) in overrides {
        // Parsed as environment variables are: "3" is a number, "[...]" a list.
        let value: figment::value::Value = value.parse().expect("an override parses");
        figment = figment.merge(Serialized::default(key, value));
    }
    Settings::from_figment(figment).expect("test settings are valid")
}

/// Creates tenant `id` and answers its first API key.
pub async fn tenant_key(herald: &Herald, id: &str) -> String {
    let tenant = herald::domain::TenantId::parse(id).expect("a valid tenant id");
    let (_, key) = herald
        .tenancy
        .create_tenant(&tenant, id)
        .await
        .expect("the tenant is created");
    secrecy::ExposeSecret::expose_secret(&key.key).to_owned()
}

/// Runs `herald` with `roles` on a port of its own until `shutdown`; answers its address
/// (`http://127.0.0.1:PORT`) and the running task.
pub async fn serve(
    herald: &Herald,
    roles: Roles,
    shutdown: &Shutdown,
) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let running = tokio::spawn(herald.clone().run(roles, Some(listener), shutdown.clone()));
    (address, running)
}

/// A Herald running in this process for one test.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The running Herald's parts.
    pub herald: Herald,
    /// The test's directory (outbox, SQLite files).
    pub dir: TempDir,
    /// An API key of the tenant "1", which the seed payloads name.
    pub key: String,
    shutdown: Shutdown,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts Herald with `roles` on `broker`; fails the test when that broker is RabbitMQ
    /// and it does not answer.
    pub async fn spawn(broker: BrokerKind, roles: Roles, overrides: &[(&str, &str)]) -> TestApp {
        let dir = TempDir::new().expect("a temporary directory");
        let settings = settings(broker, dir.path(), &unique_prefix(), overrides);
        TestApp::start(dir, settings, roles).await
    }

    /// Starts Herald with `settings` (made for `dir`, see [`settings`]) and `roles`.
    pub async fn start(dir: TempDir, settings: Settings, roles: Roles) -> TestApp {
        if settings.broker.kind == BrokerKind::Rabbitmq {
            // The broker the settings name: an override may point at another node.
            require_rabbitmq_at(settings.broker.rabbitmq.url.expose_secret());
        }
        let herald = Herald::start(settings).await.expect("Herald starts");
        let key = tenant_key(&herald, "1").await;
        let shutdown = Shutdown::new();
        let (address, running) = serve(&herald, roles, &shutdown).await;
        TestApp {
            address,
            client: http_client(),
            herald,
            dir,
            key,
            shutdown,
            running,
        }
    }

    /// GETs `path` without a key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the request reaches Herald")
    }

    /// POSTs `body` as JSON to `path`.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("the request reaches Herald")
    }

    /// Sends `method` to `path` with the tenant's key (and `body` as JSON, if given);
    /// answers the status and the JSON body (null when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the request reaches Herald");
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// The ledger's status of notification `id`, once `done` holds for it (or after 20 s).
    pub async fn notification_when(
        &self,
        id: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, status) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/notifications/{id}"),
                    None,
                )
                .await;
            if done(&status) || tokio::time::Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs `body` to `path` as it is, with `content_type` if given.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: String,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .bearer_auth(&self.key);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
            .body(body)
            .send()
            .await
            .expect("the request reaches Herald")
    }

    /// The dead letters of `kind`'s queue, once there are `count` of them (or after 20 s).
    pub async fn dead_letters(
        &self,
        kind: herald::domain::EventKind,
        count: usize,
    ) -> Vec<herald::broker::DeadLetter> {
        let spec = self.herald.topology.queue(kind);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let letters = self.herald.broker.dead_letters(spec, 100).await.unwrap();
            if letters.len() >= count || tokio::time::Instant::now() >= deadline {
                return letters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops Herald and waits until it has drained; on RabbitMQ, deletes what it declared.
    pub async fn stop(self) {
        let declared =
            (self.herald.broker.name() == "rabbitmq").then(|| self.herald.topology.clone());
        self.stop_and_keep().await;
        if let Some(topology) = declared {
            delete_rabbitmq_topology(&topology).await;
        }
    }

    /// Stops Herald and waits until it has drained, leaving its queues as they are.
    pub async fn stop_and_keep(self) {
        self.shutdown.raise();
        self.running.await.unwrap().unwrap();
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An event of `kind` as a publication on `topology`, with its id.
pub fn publication(
    topology: &herald::broker::Topology,
    kind: herald::domain::EventKind,
    payload: &serde_json::Value,
) -> (herald::broker::Publication, herald::domain::NotificationId) {
    let event = herald::domain::Event::parse(kind, payload).expect("a valid test event");
    let envelope = herald::domain::Envelope::new(event);
    (
        herald::broker::Publication::of(&envelope, topology),
        envelope.id,
    )
}

/// Deletes a test's queues and exchanges from RabbitMQ, so that test runs leave nothing
/// behind on a shared broker.
pub async fn delete_rabbitmq_topology(topology: &herald::broker::Topology) {
    let Ok(connection) = lapin::Connection::connect(&rabbitmq_url(), Default::default()).await
    else {
        return;
    };
    let channel = connection.create_channel().await.unwrap();
    herald::broker::amqp::topology::delete(&channel, topology).await;
    let _ = connection.close(200, "test done".into()).await;
    use herald::broker::amqp::{QueueType, policies};
    if let Ok(management) = policies::Management::of(&rabbitmq_url(), None) {
        for policy in policies::policies(topology, QueueType::Classic) {
            let _ = management.delete(&policy.name).await;
        }
    }
}

/// The PostgreSQL server the tests create their databases on.
pub fn postgres_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of this test's own on the test PostgreSQL, as a URL; fails the test, saying
/// why, when PostgreSQL does not answer.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let base = postgres_url();
    let mut connection = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "this test needs PostgreSQL, and {} refused ({e}): start it, or point \
             HERALD_TEST_POSTGRES_URL at one",
                herald::telemetry::redact_url(&base)
            )
        });
    let name = format!("herald_{}", uuid::Uuid::now_v7().simple());
    // The name is ours (a UUID), not input: safe to splice into DDL, which takes no binds.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut connection)
        .await
        .expect("creating a test database");
    let (server, _) = base.rsplit_once('/').expect("a database URL ends in /NAME");
    format!("{server}/{name}")
}
