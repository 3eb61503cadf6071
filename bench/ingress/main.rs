//! Ingress benchmark: how fast Herald accepts audit events over HTTP, compared with how
//! fast its broker takes the same messages when nothing else stands in between.
//!
//! For RabbitMQ, then for the embedded broker, one run measures:
//!
//! 1. **Raw broker rate.** RabbitMQ: lapin directly (none of Herald's code), persistent
//!    publisher-confirmed publishes of Herald's audit envelope to a durable queue declared
//!    with the arguments Herald gives `audit.events`, from 64 concurrent publishers spread
//!    over 4 confirm-mode channels, each awaiting its own confirm. Embedded: Herald's
//!    `EmbeddedBroker` opened in-process in a temporary directory, `Broker::publish` from
//!    64 concurrent tasks.
//! 2. **Herald over HTTP.** The release `herald api` binary as a child process, configured
//!    through environment variables only; 64 keep-alive connections POST single audit events
//!    to `/v1/audit/events`, then batches of 100 to `/v1/batch`. Only 202s count; latency is
//!    per request; the child's peak RSS is sampled every 100 ms and read from `VmHWM`.
//!    The requests carry the API key of tenant `1`, made with `herald tenant create`; the
//!    per-tenant rate limit, if Herald has one, is lifted.
//!
//! 3. **Raw RabbitMQ, pausing the HTTP hop** (a diagnostic): the raw phase again, each
//!    publisher waiting as long as the single phase's HTTP round trip before each publish,
//!    so that Herald's own cost shows apart from what the round trip costs against the
//!    broker's group commits.
//!
//! Each phase also reports where the CPU went (Herald, this process, RabbitMQ, the rest)
//! and, from Herald's own metrics, how much of a request's time was the broker's confirm.
//!
//! Every phase warms up for 2 s, then measures for `HERALD_BENCH_SECONDS` (default 10).
//! RabbitMQ is `HERALD_BENCH_RABBITMQ_URL` (default the local guest account); when it does
//! not answer, only the embedded broker is measured. Everything declared on RabbitMQ lives
//! under a unique prefix and is deleted at the end. Targets are reported, never asserted.
//!
//! Run it with `cargo bench --bench ingress` (see `bench/README.md`).
//!
//! The modules, by concern: [`load`] (closed loops of senders, counted over a window),
//! [`raw`] (the raw broker phases), [`child`] (running the `herald` child), [`http`] (the
//! HTTP phases and what is sampled during them), [`cpu`] (who used the cores),
//! [`message`] (the bytes every phase sends) and [`report`] (the printed block).

mod child;
mod cpu;
mod http;
mod load;
mod message;
mod raw;
mod report;

use child::{TENANT, has_rate_limits};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use herald::config::Settings;
use herald::telemetry::redact_url;
use http::bench_http;
use lapin::Connection;
use load::{Run, SENDERS, Window};
use raw::{RawNames, connect, delete_rabbitmq, raw_embedded, raw_rabbitmq};
use report::Report;
use std::path::Path;

/// Length limit of the audit queue, high enough never to refuse a publish here.
const MAX_LENGTH: u32 = 10_000_000;
/// Herald's built-in defaults: the child runs on them plus its environment variables.
const DEFAULTS: &str = include_str!("../../config/default.toml");

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let window = Window::from_env();
    let url = std::env::var("HERALD_BENCH_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    println!(
        "herald ingress bench: {SENDERS} concurrent senders, {} s warm-up, {} s measured per phase",
        window.warm_up.as_secs(),
        window.measure.as_secs()
    );
    println!(
        "herald runs as tenant {TENANT} (created with `herald tenant create`){}",
        if has_rate_limits() {
            ", its rate limit lifted"
        } else {
            ""
        }
    );
    match connect(&url).await {
        Ok(connection) => {
            let report = bench_rabbitmq(&connection, &url, window).await;
            report.print(true);
            let _ = connection.close(200, "bench done".into()).await;
        }
        Err(e) => println!(
            "\nRabbitMQ at {} is unreachable ({e}); measuring the embedded broker only",
            redact_url(&url)
        ),
    }
    bench_embedded(window).await.print(false);
}

/// Herald's settings for a bench run: the built-in defaults with what the child gets
/// through its environment.
fn bench_settings(prefix: &str, embedded_path: &Path) -> Settings {
    let figment = Figment::from(Toml::string(DEFAULTS))
        .merge(Serialized::default("broker.prefix", prefix))
        .merge(Serialized::default("queues.audit.max_length", MAX_LENGTH))
        .merge(Serialized::default(
            "broker.embedded.path",
            embedded_path.display().to_string(),
        ));
    Settings::from_figment(figment).expect("bench settings are valid")
}

/// A broker prefix of this run's own, so that what it declares meets nothing else.
fn unique_prefix() -> String {
    format!("bench{}.", uuid::Uuid::now_v7().simple())
}

/// Every phase on RabbitMQ: raw, over HTTP, and raw again pausing as long as the HTTP hop;
/// then deletes what the run declared.
async fn bench_rabbitmq(connection: &Connection, url: &str, window: Window) -> Report {
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = bench_settings(&prefix, &dir.path().join("unused.db"));
    let raw_names = RawNames::under(&prefix);
    let mut report = Report::new(format!("RabbitMQ ({})", redact_url(url)));
    println!("\n[{}] raw publishes (lapin)...", report.broker);
    match raw_rabbitmq(connection, &raw_names, &settings, window, None).await {
        Ok(run) => report.raw = Some(run),
        Err(e) => report.notes.push(format!("raw phase failed: {e}")),
    }
    let env = [
        ("RABBITMQ_URL", url.to_owned()),
        ("HERALD__BROKER__KIND", "rabbitmq".to_owned()),
    ];
    bench_http(&mut report, &prefix, &env, dir.path(), window).await;
    // The raw rate again, each publisher pausing as long as the HTTP round trip made each
    // sender wait: it tells what the hop itself costs against the broker's group commits
    // from what Herald's own work costs.
    if let Some(hop) = report.single.as_ref().and_then(Run::http_hop) {
        println!(
            "[{}] raw publishes pausing {:.2} ms (the HTTP hop)...",
            report.broker,
            hop.as_secs_f64() * 1e3
        );
        match raw_rabbitmq(connection, &raw_names, &settings, window, Some(hop)).await {
            Ok(run) => report.raw_paused = Some((run, hop)),
            Err(e) => report.notes.push(format!("paused raw phase failed: {e}")),
        }
    }
    let realtime_exchange = settings.realtime_exchange();
    delete_rabbitmq(
        connection,
        &settings.topology,
        &realtime_exchange,
        &raw_names,
    )
    .await;
    report
}

/// Every phase on the embedded broker: raw in this process, then over HTTP.
async fn bench_embedded(window: Window) -> Report {
    let mut report = Report::new("embedded broker (SQLite)".to_owned());
    let raw_dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "\n[{}] raw publishes (EmbeddedBroker in-process)...",
        report.broker
    );
    match raw_embedded(raw_dir.path(), window).await {
        Ok(run) => report.raw = Some(run),
        Err(e) => report.notes.push(format!("raw phase failed: {e}")),
    }
    drop(raw_dir);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("broker.db").display().to_string();
    let env = [
        ("HERALD__BROKER__KIND", "embedded".to_owned()),
        ("HERALD__BROKER__EMBEDDED__PATH", db),
    ];
    bench_http(&mut report, &unique_prefix(), &env, dir.path(), window).await;
    report
}
