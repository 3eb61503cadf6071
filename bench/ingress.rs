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

use bytes::Bytes;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use herald::broker::embedded::EmbeddedBroker;
use herald::broker::{Broker, Publication, Topology};
use herald::config::Settings;
use herald::domain::{Envelope, Event, EventKind};
use herald::telemetry::redact_url;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Concurrent senders in every phase, raw or HTTP.
const SENDERS: usize = 64;
/// Confirm-mode channels the raw RabbitMQ publishers share, as Herald's default.
const CONFIRM_CHANNELS: usize = 4;
/// Events per `/v1/batch` request.
const BATCH_SIZE: usize = 100;
/// Length limit of the audit queue, high enough never to refuse a publish here.
const MAX_LENGTH: u32 = 10_000_000;
/// Load before measuring starts.
const WARM_UP: Duration = Duration::from_secs(2);
/// The longest one publish or request may take before it counts as a timeout.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Herald may take to answer `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The tenant the bench sends as: the audit events carry `"tenantId": 1`.
const TENANT: &str = "1";
/// The per-tenant rate limit the bench runs Herald with: high enough never to answer 429,
/// since the bench measures ingress capacity, not the limiter's refusals.
const UNLIMITED: u32 = 1_000_000_000;
/// Herald's built-in defaults: the child runs on them plus its environment variables.
const DEFAULTS: &str = include_str!("../config/default.toml");

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

// ---------------------------------------------------------------------------------------
// Load generation: closed loops of concurrent senders, counted over a fixed window.

/// When a phase measures: after `warm_up`, for `measure`.
#[derive(Debug, Clone, Copy)]
struct Window {
    warm_up: Duration,
    measure: Duration,
}

impl Window {
    fn from_env() -> Self {
        let seconds = std::env::var("HERALD_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .unwrap_or(10);
        Window {
            warm_up: WARM_UP,
            measure: Duration::from_secs(seconds),
        }
    }

    /// The window of a phase that starts now.
    fn start(self) -> Schedule {
        let from = Instant::now() + self.warm_up;
        Schedule {
            from,
            until: from + self.measure,
        }
    }
}

/// When a phase that has started measures: from `from` to `until`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    from: Instant,
    until: Instant,
}

/// How one publish or request ended.
enum Outcome {
    /// Accepted, carrying this many events.
    Accepted(u64),
    /// Not accepted, for this reason (an HTTP status, `timeout`, `nack`...).
    Failed(String),
}

/// What one phase measured, over its window.
#[derive(Debug, Default)]
struct Run {
    /// Events accepted within the window.
    events: u64,
    /// Latency of each accepted operation within the window, in microseconds.
    latencies_us: Vec<u64>,
    /// Operations not accepted within the window, by reason.
    failures: BTreeMap<String, u64>,
    /// The window's length.
    seconds: f64,
    /// How busy the CPUs were during the window.
    cpu: Option<CpuUse>,
    /// Herald's peak RSS during the phase (warm-up included), in kB.
    herald_rss_kb: Option<u64>,
    /// Where Herald's time went during the window, from its own metrics.
    herald_times: Option<HeraldTimes>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn merge(&mut self, other: Run) {
        self.events += other.events;
        self.latencies_us.extend(other.latencies_us);
        for (reason, count) in other.failures {
            *self.failures.entry(reason).or_default() += count;
        }
    }

    fn mean_ms(&self) -> Option<f64> {
        let count = self.latencies_us.len();
        (count > 0).then(|| self.latencies_us.iter().sum::<u64>() as f64 / count as f64 / 1000.0)
    }

    /// The mean time a request spent outside Herald: the client's mean latency less the
    /// mean time inside Herald.
    fn http_hop(&self) -> Option<Duration> {
        let inside = self.herald_times?.request_ms;
        let hop_ms = self.mean_ms()? - inside;
        (hop_ms > 0.0).then(|| Duration::from_secs_f64(hop_ms / 1e3))
    }

    /// The `q` quantile of the latencies, in milliseconds.
    fn percentile_ms(&self, q: f64) -> Option<f64> {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        let index = ((last as f64) * q).round() as usize;
        Some(sorted[index] as f64 / 1000.0)
    }
}

/// Runs `SENDERS` closed loops of `op(sender)` (each awaits its operation before starting
/// the next) and counts the operations that end within the window. The CPU use of the
/// machine, of this process and of `herald` (a process id) is measured over the window.
async fn closed_loop<F, Fut>(schedule: Schedule, herald: Option<u32>, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let op = Arc::new(op);
    let Schedule { from, until } = schedule;
    let cpu = tokio::spawn(cpu_during(from, until, herald));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut run = Run::default();
                while Instant::now() < until {
                    let began = Instant::now();
                    let outcome = tokio::time::timeout(OP_TIMEOUT, op(sender))
                        .await
                        .unwrap_or_else(|_| Outcome::Failed("timeout".into()));
                    let ended = Instant::now();
                    if ended < from || ended > until {
                        continue;
                    }
                    match outcome {
                        Outcome::Accepted(events) => {
                            run.events += events;
                            run.latencies_us.push((ended - began).as_micros() as u64);
                        }
                        Outcome::Failed(reason) => *run.failures.entry(reason).or_default() += 1,
                    }
                }
                run
            })
        })
        .collect();
    let mut total = Run {
        seconds: (until - from).as_secs_f64(),
        cpu: cpu.await.ok().flatten(),
        ..Run::default()
    };
    for sender in senders {
        match sender.await {
            Ok(run) => total.merge(run),
            Err(e) => {
                *total
                    .failures
                    .entry(format!("sender died: {e}"))
                    .or_default() += 1
            }
        }
    }
    total
}

// ---------------------------------------------------------------------------------------
// CPU accounting, from /proc, to see who used the (few) cores during a window.

/// Clock ticks spent so far: by the machine (busy, and in all), by this process, by
/// Herald and by RabbitMQ.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    busy: u64,
    total: u64,
    bench: u64,
    herald: Option<u64>,
    rabbitmq: Option<u64>,
}

/// Cores used on average over a window.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    cores: usize,
    machine: f64,
    bench: f64,
    herald: Option<f64>,
    rabbitmq: Option<f64>,
}

impl CpuTicks {
    fn now(herald: Option<u32>, rabbitmq: &[u32]) -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu  user nice system idle iowait irq softirq steal ...
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        let idle = fields.get(3)? + fields.get(4)?;
        Some(CpuTicks {
            busy: total - idle,
            total,
            bench: process_ticks("self")?,
            herald: herald.and_then(|pid| process_ticks(&pid.to_string())),
            rabbitmq: (!rabbitmq.is_empty()).then(|| {
                let ticks = rabbitmq
                    .iter()
                    .filter_map(|pid| process_ticks(&pid.to_string()));
                ticks.sum()
            }),
        })
    }

    /// The cores used from `self` to `later`.
    fn until(self, later: CpuTicks) -> Option<CpuUse> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let elapsed = later.total.checked_sub(self.total).filter(|&t| t > 0)? as f64;
        let share =
            |after: u64, before: u64| after.saturating_sub(before) as f64 * cores as f64 / elapsed;
        let optional = |after: Option<u64>, before: Option<u64>| {
            after
                .zip(before)
                .map(|(after, before)| share(after, before))
        };
        Some(CpuUse {
            cores,
            machine: share(later.busy, self.busy),
            bench: share(later.bench, self.bench),
            herald: optional(later.herald, self.herald),
            rabbitmq: optional(later.rabbitmq, self.rabbitmq),
        })
    }
}

/// User and system ticks of a process (`self` or a pid), from `/proc/<pid>/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the first, utime
    // the 12th and stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The processes whose command name is `name`.
fn find_processes(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// The CPU use between `from` and `until`; RabbitMQ's is that of the local `beam.smp`
/// processes (Erlang VMs), if any.
async fn cpu_during(from: Instant, until: Instant, herald: Option<u32>) -> Option<CpuUse> {
    let rabbitmq = find_processes("beam.smp");
    tokio::time::sleep_until(from.into()).await;
    let before = CpuTicks::now(herald, &rabbitmq)?;
    tokio::time::sleep_until(until.into()).await;
    before.until(CpuTicks::now(herald, &rabbitmq)?)
}

// ---------------------------------------------------------------------------------------
// The message: Herald's own audit envelope, so that raw and HTTP publish the same bytes.

/// An audit event as the seed services send one.
fn audit_event() -> Value {
    json!({
        "eventType": "USER_UPDATED",
        "userId": "user_123",
        "tenantId": 1,
        "entityType": "User",
        "entityId": "user_456",
        "changes": {"email": "new@example.com"},
        "timestamp": "2026-01-31T12:00:00Z"
    })
}

/// The envelope Herald would publish for the audit event, and its routing key.
fn audit_envelope() -> (Bytes, &'static str) {
    let event = Event::parse(EventKind::Audit, &audit_event()).expect("a valid audit event");
    let routing_key = event.routing_key();
    (Envelope::new(event).to_bytes().into(), routing_key)
}

/// The `/v1/batch` body: `BATCH_SIZE` audit events.
fn batch_body() -> Bytes {
    let mut event = audit_event();
    event["kind"] = json!("audit");
    let events: Vec<Value> = (0..BATCH_SIZE).map(|_| event.clone()).collect();
    serde_json::to_vec(&json!({ "events": events }))
        .expect("JSON serializes")
        .into()
}

fn message_id() -> String {
    uuid::Uuid::now_v7().to_string()
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

fn unique_prefix() -> String {
    format!("bench{}.", uuid::Uuid::now_v7().simple())
}

// ---------------------------------------------------------------------------------------
// RabbitMQ.

async fn connect(url: &str) -> Result<Connection, String> {
    let connecting = Connection::connect(url, ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// The raw queue, its dead-letter queue and the exchange it is bound to.
struct RawNames {
    exchange: String,
    queue: String,
    dead_letter_queue: String,
}

impl RawNames {
    fn under(prefix: &str) -> Self {
        let queue = format!("{prefix}raw.audit.events");
        RawNames {
            exchange: format!("{prefix}raw.audit"),
            dead_letter_queue: format!("{queue}.dlq"),
            queue,
        }
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The arguments Herald declares `audit.events` with (classic queue type).
fn audit_queue_arguments(settings: &Settings, dead_letter_queue: &str) -> FieldTable {
    let ttl_ms = settings
        .topology
        .queue(EventKind::Audit)
        .message_ttl
        .as_millis() as i64;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("classic"));
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(MAX_LENGTH)),
    );
    args.insert("x-overflow".into(), text("reject-publish"));
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(dead_letter_queue));
    args
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the raw exchange and queues as Herald declares its audit topology.
async fn declare_raw(
    channel: &Channel,
    names: &RawNames,
    settings: &Settings,
    routing_key: &str,
) -> Result<(), lapin::Error> {
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            exchange,
            FieldTable::default(),
        )
        .await?;
    let mut classic = FieldTable::default();
    classic.insert("x-queue-type".into(), text("classic"));
    channel
        .queue_declare(
            names.dead_letter_queue.as_str().into(),
            durable_queue(),
            classic,
        )
        .await?;
    channel
        .queue_declare(
            names.queue.as_str().into(),
            durable_queue(),
            audit_queue_arguments(settings, &names.dead_letter_queue),
        )
        .await?;
    channel
        .queue_bind(
            names.queue.as_str().into(),
            names.exchange.as_str().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// The properties Herald gives every message: JSON, persistent, stamped, with an id.
fn persistent_properties() -> BasicProperties {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(now)
        .with_message_id(message_id().into())
        .with_headers(FieldTable::default())
}

/// One mandatory, persistent publish, awaiting its confirm.
async fn publish_confirmed(
    channel: Channel,
    exchange: Arc<str>,
    routing_key: &'static str,
    body: Bytes,
) -> Outcome {
    let confirm = channel
        .basic_publish(
            exchange.as_ref().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &body,
            persistent_properties(),
        )
        .await;
    match confirm {
        Err(e) => Outcome::Failed(format!("publish error: {e}")),
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(None)) => Outcome::Accepted(1),
            Ok(Confirmation::Ack(Some(_))) => Outcome::Failed("returned (unroutable)".into()),
            Ok(Confirmation::Nack(_)) => Outcome::Failed("nack".into()),
            Ok(Confirmation::NotRequested) => Outcome::Failed("not in confirm mode".into()),
            Err(e) => Outcome::Failed(format!("confirm error: {e}")),
        },
    }
}

/// The raw RabbitMQ rate: lapin only, 64 publishers over 4 confirm channels. With `pause`,
/// each publisher waits that long before each publish, as an HTTP client's round trip
/// makes each sender wait between Herald's answer and its next request.
async fn raw_rabbitmq(
    connection: &Connection,
    names: &RawNames,
    settings: &Settings,
    window: Window,
    pause: Option<Duration>,
) -> Result<Run, lapin::Error> {
    let (body, routing_key) = audit_envelope();
    let declaring = connection.create_channel().await?;
    declare_raw(&declaring, names, settings, routing_key).await?;
    let _ = declaring.close(200, "declared".into()).await;
    let mut channels = Vec::with_capacity(CONFIRM_CHANNELS);
    for _ in 0..CONFIRM_CHANNELS {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    let exchange: Arc<str> = names.exchange.as_str().into();
    let run = closed_loop(window.start(), None, move |sender| {
        let publish = publish_confirmed(
            channels[sender % CONFIRM_CHANNELS].clone(),
            exchange.clone(),
            routing_key,
            body.clone(),
        );
        async move {
            if let Some(pause) = pause {
                // A thread's sleep, not tokio's timer, which rounds up to whole milliseconds.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
            }
            publish.await
        }
    })
    .await;
    Ok(run)
}

/// Deletes Herald's topology under the bench prefix, its real-time exchange, and the raw
/// queues and exchange.
async fn delete_rabbitmq(
    connection: &Connection,
    topology: &Topology,
    realtime_exchange: &String,
    raw: &RawNames,
) {
    let Ok(channel) = connection.create_channel().await else {
        println!("  cleanup: no channel; bench queues are left on RabbitMQ");
        return;
    };
    let mut deleted = 0;
    let raw_queues = [&raw.queue, &raw.dead_letter_queue];
    for queue in raw_queues {
        let deleting = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), deleting).await {
            deleted += 1;
        }
    }
    let exchanges = [&raw.exchange, realtime_exchange];
    for exchange in exchanges {
        let deleting =
            channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default());
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(10), deleting).await {
            deleted += 1;
        }
    }
    let herald_total =
        herald::broker::amqp::topology::queue_names(topology).len() + topology.exchanges().len();
    let herald_topology = herald::broker::amqp::topology::delete(&channel, topology);
    deleted += tokio::time::timeout(Duration::from_secs(60), herald_topology)
        .await
        .map_or(0, |(herald_deleted, _)| herald_deleted);
    let total = raw_queues.len() + exchanges.len() + herald_total;
    let _ = channel.close(200, "cleaned up".into()).await;
    println!("  cleanup: deleted {deleted} of {total} bench queues and exchanges");
}

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

// ---------------------------------------------------------------------------------------
// The embedded broker.

/// The raw embedded rate: Herald's `EmbeddedBroker` in this process, no HTTP.
async fn raw_embedded(dir: &Path, window: Window) -> Result<Run, String> {
    let settings = bench_settings(&unique_prefix(), &dir.join("broker.db"));
    let topology = settings.topology.clone();
    let broker = EmbeddedBroker::open(topology.clone(), settings.broker.embedded.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (body, routing_key) = audit_envelope();
    let exchange = topology.queue(EventKind::Audit).exchange.clone();
    let publisher = broker.clone();
    let run = closed_loop(window.start(), None, move |_| {
        let broker = publisher.clone();
        let publication = Publication {
            exchange: exchange.clone(),
            routing_key: routing_key.to_owned(),
            message_id: message_id(),
            body: body.clone(),
        };
        async move {
            match broker.publish(publication).await {
                Ok(()) => Outcome::Accepted(1),
                Err(e) => Outcome::Failed(e.label().to_owned()),
            }
        }
    })
    .await;
    broker.close().await;
    Ok(run)
}

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

// ---------------------------------------------------------------------------------------
// Herald as a child process, driven over HTTP.

/// A running `herald api`, stopped with SIGTERM.
struct HeraldProcess {
    child: Child,
    port: u16,
    base_url: String,
    /// `Bearer <the tenant's API key>`.
    authorization: String,
    stderr_path: std::path::PathBuf,
}

/// `herald <args>` in `dir`, with only Herald's environment: the listen address, the
/// prefix, the audit queue's length, warnings only, and `env`.
fn herald_command(
    args: &[&str],
    dir: &Path,
    listen: &str,
    prefix: &str,
    env: &[(&str, String)],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("HERALD__HTTP__LISTEN", listen)
        .env("HERALD__BROKER__PREFIX", prefix)
        .env("HERALD__QUEUES__AUDIT__MAX_LENGTH", MAX_LENGTH.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if has_rate_limits() {
        command
            .env("HERALD__RATE_LIMITS__PER_SECOND", UNLIMITED.to_string())
            .env("HERALD__RATE_LIMITS__BURST", UNLIMITED.to_string());
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Whether this Herald has per-tenant rate limits (which the bench lifts).
fn has_rate_limits() -> bool {
    Figment::from(Toml::string(DEFAULTS))
        .find_value("rate_limits.per_second")
        .is_ok()
}

/// Creates the bench's tenant with `herald tenant create` and answers its API key.
async fn create_tenant(mut command: Command) -> Result<String, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running herald tenant create: {e}"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("herald tenant create did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("api key (shown once):"))
        .map(|key| key.trim().to_owned())
        .ok_or_else(|| {
            format!(
                "herald tenant create printed no key ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

impl HeraldProcess {
    /// Creates the tenant, then starts `herald api` in `dir`.
    async fn spawn(dir: &Path, prefix: &str, env: &[(&str, String)]) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let listen = format!("127.0.0.1:{port}");
        let tenant = herald_command(&["tenant", "create", TENANT], dir, &listen, prefix, env);
        let api_key = create_tenant(tenant).await?;
        let stderr_path = dir.join("herald.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let child = herald_command(&["api"], dir, &listen, prefix, env)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("running herald api: {e}"))?;
        Ok(HeraldProcess {
            child,
            port,
            base_url: format!("http://{listen}"),
            authorization: format!("Bearer {api_key}"),
            stderr_path,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/health/ready` answers 200.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = http_client();
        let url = format!("{}/health/ready", self.base_url);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "herald exited with {status}: {}",
                    self.stderr_tail()
                ));
            }
            let asking = tokio::time::timeout(Duration::from_secs(1), client.get(&url).send());
            if let Ok(Ok(response)) = asking.await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "not ready within {READY_TIMEOUT:?}: {}",
            self.stderr_tail()
        ))
    }

    /// The last lines Herald logged.
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    async fn stop(mut self) -> Option<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Some("herald did not exit within 10 s of SIGTERM and was killed".into())
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A client that holds one keep-alive connection (each sender gets its own).
fn http_client() -> reqwest::Client {
    herald::channels::tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()
        .expect("an HTTP client")
}

/// POSTs `body` to `url` and reads the whole answer, so that the connection is reused.
async fn post(
    client: reqwest::Client,
    url: Arc<str>,
    authorization: Arc<str>,
    body: Bytes,
    events: u64,
) -> Outcome {
    let sent = client
        .post(url.as_ref())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::AUTHORIZATION, authorization.as_ref())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            let _ = response.bytes().await;
            if status == reqwest::StatusCode::ACCEPTED {
                Outcome::Accepted(events)
            } else {
                Outcome::Failed(format!("HTTP {}", status.as_u16()))
            }
        }
        Err(e) if e.is_connect() => Outcome::Failed("connect error".into()),
        Err(_) => Outcome::Failed("request error".into()),
    }
}

/// 64 senders, each on its own keep-alive connection, POSTing `body` (`events` events) to
/// `path`, with Herald's RSS and sockets sampled; answers the run and the most sockets.
async fn http_phase(
    herald: &HeraldProcess,
    path: &str,
    body: Bytes,
    events: u64,
    window: Window,
) -> (Run, usize) {
    let clients: Vec<reqwest::Client> = (0..SENDERS).map(|_| http_client()).collect();
    let url: Arc<str> = format!("{}{path}", herald.base_url).into();
    let authorization: Arc<str> = herald.authorization.as_str().into();
    let sampler = Sampler::start(herald.pid());
    let schedule = window.start();
    let times = tokio::spawn(herald_times(
        herald.base_url.clone(),
        path.to_owned(),
        schedule,
    ));
    let mut run = closed_loop(schedule, Some(herald.pid()), move |sender| {
        let client = clients[sender].clone();
        post(
            client,
            url.clone(),
            authorization.clone(),
            body.clone(),
            events,
        )
    })
    .await;
    let (rss_kb, sockets) = sampler.finish();
    run.herald_rss_kb = Some(rss_kb);
    run.herald_times = times.await.ok().flatten();
    (run, sockets)
}

/// Mean times inside Herald over a window, in milliseconds, from its `/metrics`.
#[derive(Debug, Clone, Copy)]
struct HeraldTimes {
    /// Handling one request, from routing to the answer.
    request_ms: f64,
    /// Waiting for the broker to confirm one publish (single events only).
    confirm_ms: Option<f64>,
}

/// Running sums and counts of Herald's latency histograms.
#[derive(Debug, Clone, Copy)]
struct HeraldTotals {
    request_sum: f64,
    request_count: f64,
    confirm_sum: f64,
    confirm_count: f64,
}

/// A value of Herald's metrics: the line of `name` carrying the label value `label`.
fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    let label = format!("\"{label}\"");
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l.contains(&label))?;
    line.rsplit(' ').next()?.parse().ok()
}

async fn herald_totals(base_url: &str, route: &str) -> Option<HeraldTotals> {
    let asking = http_client().get(format!("{base_url}/metrics")).send();
    let response = tokio::time::timeout(Duration::from_secs(2), asking)
        .await
        .ok()?
        .ok()?;
    let text = response.text().await.ok()?;
    let value = |name: &str, label: &str| metric(&text, name, label).unwrap_or(0.0);
    let request = "herald_http_request_duration_seconds";
    let confirm = "herald_queue_confirm_duration_seconds";
    Some(HeraldTotals {
        request_sum: value(&format!("{request}_sum"), route),
        request_count: value(&format!("{request}_count"), route),
        confirm_sum: value(&format!("{confirm}_sum"), "audit.events"),
        confirm_count: value(&format!("{confirm}_count"), "audit.events"),
    })
}

/// Herald's mean request and confirm times over `schedule`'s window, for `route`.
async fn herald_times(base_url: String, route: String, schedule: Schedule) -> Option<HeraldTimes> {
    tokio::time::sleep_until(schedule.from.into()).await;
    let before = herald_totals(&base_url, &route).await?;
    tokio::time::sleep_until(schedule.until.into()).await;
    let after = herald_totals(&base_url, &route).await?;
    let mean = |sum: f64, count: f64| (count > 0.0).then(|| sum / count * 1000.0);
    Some(HeraldTimes {
        request_ms: mean(
            after.request_sum - before.request_sum,
            after.request_count - before.request_count,
        )?,
        confirm_ms: mean(
            after.confirm_sum - before.confirm_sum,
            after.confirm_count - before.confirm_count,
        ),
    })
}

/// Peak memory and sockets of a process, sampled every 100 ms on a thread of its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut rss_kb, mut sockets) = (0, 0);
            while !stopping.load(Ordering::Relaxed) {
                rss_kb = rss_kb.max(status_kb(pid, "VmRSS:").unwrap_or(0));
                sockets = sockets.max(socket_count(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            (rss_kb, sockets)
        });
        Sampler { stop, thread }
    }

    /// Stops sampling: the peak sampled RSS in kB, and the most sockets.
    fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// How many sockets the process has open (its listener, broker and client connections).
fn socket_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// TCP connections to or from `port` in TIME_WAIT, i.e. closed in the last minute. Clients
/// that keep their connections alive leave none; one that reconnected per request would
/// leave one per request.
fn closed_connections(port: u16) -> usize {
    let port_of = |address: &str| {
        let hex = address.rsplit(':').next()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let &[_, local, remote, state, ..] = fields.as_slice() else {
                continue;
            };
            let ours = port_of(local) == Some(port) || port_of(remote) == Some(port);
            if ours && state == "06" {
                count += 1;
            }
        }
    }
    count
}

/// Starts Herald, measures single events then batches over HTTP, and stops it.
async fn bench_http(
    report: &mut Report,
    prefix: &str,
    env: &[(&str, String)],
    dir: &Path,
    window: Window,
) {
    let mut herald = match HeraldProcess::spawn(dir, prefix, env).await {
        Ok(herald) => herald,
        Err(e) => return report.notes.push(format!("herald did not start: {e}")),
    };
    if let Err(e) = herald.wait_ready().await {
        report.notes.push(format!("herald was not ready: {e}"));
        if let Some(note) = herald.stop().await {
            report.notes.push(note);
        }
        return;
    }
    let single = serde_json::to_vec(&audit_event()).expect("JSON serializes");
    println!("[{}] HTTP single events...", report.broker);
    let (run, single_sockets) =
        http_phase(&herald, "/v1/audit/events", single.into(), 1, window).await;
    report.single = Some(run);
    println!("[{}] HTTP batches of {BATCH_SIZE}...", report.broker);
    let events = BATCH_SIZE as u64;
    let (run, batch_sockets) = http_phase(&herald, "/v1/batch", batch_body(), events, window).await;
    report.batch = Some(run);
    report.high_water_kb = status_kb(herald.pid(), "VmHWM:");
    report.peak_sockets = Some(single_sockets.max(batch_sockets));
    report.closed_connections = Some(closed_connections(herald.port));
    let warnings = std::fs::read_to_string(&herald.stderr_path)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    if warnings > 0 {
        report.notes.push(format!(
            "herald logged {warnings} lines at warn or above; last: {}",
            herald.stderr_tail()
        ));
    }
    if let Some(note) = herald.stop().await {
        report.notes.push(note);
    }
}

// ---------------------------------------------------------------------------------------
// The report.

/// Everything measured for one broker.
struct Report {
    broker: String,
    body_bytes: usize,
    raw: Option<Run>,
    /// The raw rate with each publisher pausing as long as the HTTP hop, and that pause.
    raw_paused: Option<(Run, Duration)>,
    single: Option<Run>,
    batch: Option<Run>,
    high_water_kb: Option<u64>,
    peak_sockets: Option<usize>,
    closed_connections: Option<usize>,
    notes: Vec<String>,
}

impl Report {
    fn new(broker: String) -> Self {
        Report {
            broker,
            body_bytes: audit_envelope().0.len(),
            raw: None,
            raw_paused: None,
            single: None,
            batch: None,
            high_water_kb: None,
            peak_sockets: None,
            closed_connections: None,
            notes: Vec::new(),
        }
    }

    /// Herald's peak RSS in kB: the most sampled in either HTTP phase, or its `VmHWM`.
    fn peak_rss_kb(&self) -> Option<u64> {
        [&self.single, &self.batch]
            .into_iter()
            .filter_map(|run| run.as_ref()?.herald_rss_kb)
            .chain(self.high_water_kb)
            .max()
    }

    /// `run`'s rate over the raw rate.
    fn ratio(&self, run: Option<&Run>) -> Option<f64> {
        let raw = self.raw.as_ref()?.rate();
        let rate = run?.rate();
        (raw > 0.0).then_some(rate / raw)
    }

    /// Prints the block; `with_targets` adds the RabbitMQ targets and whether each is met.
    fn print(&self, with_targets: bool) {
        println!("\n=== {} ===", self.broker);
        println!(
            "  message body            {} bytes (Herald's audit envelope)",
            self.body_bytes
        );
        print_rate("raw broker rate", "msgs/s", self.raw.as_ref());
        print_rate("HTTP single rate", "events/s", self.single.as_ref());
        print_ratio(
            "ratio single/raw",
            self.ratio(self.single.as_ref()),
            with_targets.then_some(0.8),
        );
        if let Some((paused, hop)) = &self.raw_paused {
            print_rate(
                &format!("raw, pausing {:.2} ms", hop.as_secs_f64() * 1e3),
                "msgs/s",
                Some(paused),
            );
            println!(
                "                          (each publisher waits as long as the HTTP hop above before each publish)"
            );
            let single = self.single.as_ref().map(Run::rate);
            if let Some(single) = single.filter(|_| paused.rate() > 0.0) {
                println!(
                    "  ratio single/paused raw {:>8.2}x   (Herald's own cost; the rest of the gap is the hop)",
                    single / paused.rate()
                );
            }
        }
        print_rate(
            &format!("HTTP batch-{BATCH_SIZE} rate"),
            "events/s",
            self.batch.as_ref(),
        );
        print_ratio(
            "ratio batch/raw",
            self.ratio(self.batch.as_ref()),
            with_targets.then_some(0.95),
        );
        let rss_mb = self.peak_rss_kb().map(|kb| kb as f64 / 1024.0);
        match rss_mb {
            Some(mb) => {
                let hwm = self
                    .high_water_kb
                    .map_or("?".into(), |kb| format!("{:.1}", kb as f64 / 1024.0));
                let target = if with_targets {
                    verdict(mb < 100.0, "< 100 MB")
                } else {
                    String::new()
                };
                println!("  peak RSS (herald api)   {mb:.1} MB (VmHWM {hwm} MB){target}");
            }
            None => println!("  peak RSS (herald api)   n/a"),
        }
        if let Some(sockets) = self.peak_sockets {
            println!(
                "  herald sockets (peak)   {sockets} (listener + broker + client connections)"
            );
        }
        if let Some(closed) = self.closed_connections {
            // Each phase's senders close their one connection each when the phase ends;
            // the readiness probe and the four /metrics scrapes close one each.
            let expected = 2 * SENDERS + 1 + 4;
            println!(
                "  closed HTTP connections {closed} in TIME_WAIT ({expected} if every sender kept one connection)"
            );
        }
        println!(
            "  non-202 answers         single {}, batch {}",
            failures(self.single.as_ref()),
            failures(self.batch.as_ref())
        );
        if let Some(raw) = self.raw.as_ref().filter(|r| r.failed() > 0) {
            println!("  raw failures            {}", failures(Some(raw)));
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
    }
}

fn print_rate(label: &str, unit: &str, run: Option<&Run>) {
    let Some(run) = run else {
        return println!("  {label:<23} n/a");
    };
    let ms = |q| {
        run.percentile_ms(q)
            .map_or("n/a".into(), |v| format!("{v:.2} ms"))
    };
    println!(
        "  {label:<23} {:>9.0} {unit:<9} p50 {:>9}  p99 {:>9}",
        run.rate(),
        ms(0.50),
        ms(0.99)
    );
    let mut detail = Vec::new();
    if let Some(cpu) = run.cpu {
        detail.push(cpu_line(&cpu));
    }
    if let (Some(times), Some(client)) = (run.herald_times, run.mean_ms()) {
        let confirm = times
            .confirm_ms
            .map_or(String::new(), |c| format!(" (broker confirm {c:.2})"));
        detail.push(format!(
            "mean ms: client {client:.2}, inside herald {:.2}{confirm}",
            times.request_ms
        ));
    }
    if let Some(kb) = run.herald_rss_kb {
        detail.push(format!("herald RSS {:.1} MB", kb as f64 / 1024.0));
    }
    for line in detail {
        println!("  {:<23} {line}", "");
    }
}

/// `cpu 1.90 of 2 cores busy: herald 0.50, bench 0.60, rabbitmq 0.70, other 0.10`.
fn cpu_line(cpu: &CpuUse) -> String {
    let parts = [
        ("herald", cpu.herald),
        ("bench", Some(cpu.bench)),
        ("rabbitmq", cpu.rabbitmq),
    ];
    let known: f64 = parts.iter().filter_map(|(_, cores)| *cores).sum();
    let mut shares: Vec<String> = parts
        .iter()
        .filter_map(|(name, cores)| Some(format!("{name} {:.2}", (*cores)?)))
        .collect();
    shares.push(format!("other {:.2}", (cpu.machine - known).max(0.0)));
    format!(
        "cpu {:.2} of {} cores busy: {}",
        cpu.machine,
        cpu.cores,
        shares.join(", ")
    )
}

fn print_ratio(label: &str, ratio: Option<f64>, target: Option<f64>) {
    let Some(ratio) = ratio else {
        return println!("  {label:<23} n/a");
    };
    let verdict = target.map_or(String::new(), |t| {
        verdict(ratio >= t, &format!(">= {t:.2}x raw"))
    });
    println!("  {label:<23} {ratio:>9.2}x{verdict}");
}

fn verdict(met: bool, target: &str) -> String {
    format!(
        "   target {target}: {}",
        if met { "met" } else { "NOT met" }
    )
}

/// `total (reason count, ...)` of the failures of `run`.
fn failures(run: Option<&Run>) -> String {
    let Some(run) = run else { return "n/a".into() };
    if run.failures.is_empty() {
        return "0".into();
    }
    let reasons: Vec<String> = run
        .failures
        .iter()
        .map(|(reason, count)| format!("{reason}: {count}"))
        .collect();
    format!("{} ({})", run.failed(), reasons.join(", "))
}
