//! The email bench: messages per second that Herald's email worker delivers into Postfix's
//! `smtp-sink`, against the rate Postfix's own load generator `smtp-source` reaches on the
//! same sink in the same run.
//!
//! Run: `cargo bench --bench email` (needs Debian's `postfix` package for `smtp-sink` and
//! `smtp-source`). `HERALD_BENCH_EMAILS` sets the message count (default 100,000: at 20,000
//! a phase lasts about a second and its figure swings), `HERALD_BENCH_SESSIONS` the SMTP connections on both sides (default 32),
//! `HERALD_BENCH_RECIPIENTS` the event shapes measured (default `10,1`: recipients per event),
//! `HERALD_BENCH_CONCURRENCY` the events Herald's email worker handles at once (default 16 ×
//! the sessions, the ratio of Herald's configuration: messages that wait for a session go
//! pipelined behind the one in flight, and an event holds its worker while its outcome is
//! committed, after its session is free for the next message). With
//! `HERALD_BENCH_RABBITMQ_URL` set, the queue is RabbitMQ instead of the embedded broker.
//!
//! Herald runs in this process: the events are queued first (not timed), then the email
//! worker pool starts and the clock runs until every message has been handled. Each
//! message is rendered from the built-in `welcome` template, in the built-in layout, and
//! sent as its own SMTP transaction, as in production; the delivery ledger records every
//! recipient. Two shapes are measured: events of 10 recipients, and events of one. A last,
//! diagnostic phase drains events of one recipient with a handler that renders and sends
//! nothing: the ceiling that the queue, the worker pool and the ledger set by themselves.

use herald::app::{Herald, Roles};
use herald::broker::Publication;
use herald::config::Settings;
use herald::domain::{Envelope, Event, EventKind, TenantId};
use herald::shutdown::Shutdown;
use herald::telemetry::QueueOutcomeLabels;
use herald::workers::{Handler, Outcome};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::measure::{machine_ticks, peak_rss_mb, process_ticks};
use testkit::{env_or, free_port};

fn postfix_tool(name: &str) -> String {
    let path = format!("/usr/sbin/{name}");
    if !Path::new(&path).exists() {
        eprintln!(
            "{name} is missing: apt-get install postfix (it brings smtp-sink and smtp-source)"
        );
        std::process::exit(2);
    }
    path
}

/// Starts `smtp-sink` on `port`; it accepts every message and keeps nothing.
fn start_sink(port: u16) -> Child {
    let child = Command::new(postfix_tool("smtp-sink"))
        // It must drop root privileges to run as root.
        .args(["-u", "nobody", &format!("127.0.0.1:{port}"), "1024"])
        .stdout(Stdio::null())
        .spawn()
        .expect("smtp-sink starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `smtp-source` sending `count` messages of `size` bytes over `sessions` connections that
/// it keeps open (`-d`), as Herald keeps its pooled ones. Answers messages per second.
fn smtp_source(port: u16, count: usize, sessions: usize, size: usize) -> f64 {
    let started = Instant::now();
    let status = Command::new(postfix_tool("smtp-source"))
        .args(["-d", "-s", &sessions.to_string(), "-m", &count.to_string()])
        .args(["-l", &size.to_string()])
        .args(["-f", "no-reply@herald.localhost", "-t", "ada@example.com"])
        .arg(format!("127.0.0.1:{port}"))
        .status()
        .expect("smtp-source runs");
    assert!(status.success(), "smtp-source failed");
    count as f64 / started.elapsed().as_secs_f64()
}

fn settings(dir: &Path, port: u16, sessions: usize, concurrency: usize) -> Settings {
    use figment::providers::Serialized;
    let mut figment = Settings::figment(Path::new("/nonexistent"))
        .merge(Serialized::default(
            "broker.embedded.path",
            dir.join("broker.db").display().to_string(),
        ))
        .merge(Serialized::default(
            "database.url",
            format!("sqlite://{}", dir.join("herald.db").display()),
        ))
        .merge(Serialized::default("email.smtp.host", "127.0.0.1"))
        .merge(Serialized::default("email.smtp.port", port))
        .merge(Serialized::default("email.smtp.security", "plain"))
        .merge(Serialized::default("email.pool_size", sessions))
        .merge(Serialized::default("queues.email.concurrency", concurrency))
        .merge(Serialized::default("queues.email.max_length", 10_000_000));
    if let Ok(url) = std::env::var("HERALD_BENCH_RABBITMQ_URL") {
        figment = figment
            .merge(Serialized::default("broker.kind", "rabbitmq"))
            .merge(Serialized::default("broker.rabbitmq.url", url))
            .merge(Serialized::default(
                "broker.prefix",
                format!("bench{}.", uuid::Uuid::now_v7().simple()),
            ));
    } else {
        figment = figment.merge(Serialized::default("broker.kind", "embedded"));
    }
    Settings::from_figment(figment).expect("bench settings are valid")
}

/// Queues `events` email events of `recipients` recipients each (not timed).
async fn fill_queue(herald: &Herald, events: usize, recipients: usize) {
    for start in (0..events).step_by(500) {
        let publications = (start..(start + 500).min(events))
            .map(|i| {
                let to: Vec<String> = (0..recipients)
                    .map(|r| format!("user{i}.{r}@example.com"))
                    .collect();
                let payload = json!({
                    "tenantId": "bench", "to": to, "template": "welcome",
                    "data": {"name": format!("User {i}")},
                });
                let event = Event::parse(EventKind::Email, &payload).expect("a valid email event");
                Publication::of(&Envelope::new(event), &herald.topology)
            })
            .collect();
        for result in herald.broker.publish_all(publications).await {
            result.expect("the queue takes the event");
        }
    }
}

fn handled(herald: &Herald, outcome: &str) -> u64 {
    let queue = herald
        .topology
        .queue(EventKind::Email)
        .configured_name
        .clone();
    herald
        .metrics
        .handled
        .get_or_create(&QueueOutcomeLabels {
            queue,
            outcome: outcome.to_owned(),
        })
        .get()
}

/// CPU time this process has used, and the machine's busy and total time, in clock ticks.
fn cpu_ticks() -> (u64, u64, u64) {
    let (busy, total) = machine_ticks().unwrap_or_default();
    (process_ticks("self").unwrap_or_default(), busy, total)
}

/// The cores busy between two readings of [`cpu_ticks`]: Herald's (this process) and the
/// machine's.
fn cores_busy(before: (u64, u64, u64), after: (u64, u64, u64), cores: f64) -> (f64, f64) {
    let total = (after.2 - before.2).max(1) as f64;
    let herald = (after.0 - before.0) as f64 / total * cores;
    let machine = (after.1 - before.1) as f64 / total * cores;
    (herald, machine)
}

/// What drains the email queue in a phase.
#[derive(Clone, Copy)]
enum Drain {
    /// Herald's email worker: render, build, send over SMTP.
    EmailWorker,
    /// A handler that takes each event as delivered without rendering or sending: what
    /// the queue, the worker pool and the ledger cost alone (a diagnostic).
    Sendless,
}

/// Takes every event as delivered, sending nothing.
struct Sendless;

#[async_trait::async_trait]
impl Handler for Sendless {
    async fn handle(&self, _envelope: &Envelope, _attempt: u32) -> Outcome {
        Outcome::Delivered
    }
}

/// Herald draining `messages` messages in events of `recipients` as `drain` says; answers
/// messages per second.
async fn herald_rate(
    port: u16,
    messages: usize,
    recipients: usize,
    (sessions, concurrency): (usize, usize),
    drain: Drain,
) -> (f64, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let herald = Herald::start(settings(dir.path(), port, sessions, concurrency))
        .await
        .expect("Herald starts");
    // The pool rejects events of a tenant that does not exist.
    herald
        .tenancy
        .create_tenant(&TenantId::parse("bench").unwrap(), "bench")
        .await
        .expect("the bench tenant is created");
    let events = messages / recipients;
    fill_queue(&herald, events, recipients).await;
    let shutdown = Shutdown::new();
    let roles = Roles {
        api: false,
        queues: vec![EventKind::Email],
    };
    let started = Instant::now();
    let ticks = cpu_ticks();
    let running = match drain {
        Drain::EmailWorker => tokio::spawn(herald.clone().run(roles, None, shutdown.clone())),
        Drain::Sendless => {
            let pool = herald.worker_pool(EventKind::Email, Arc::new(Sendless));
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                pool.run(shutdown, Duration::from_secs(5)).await;
                Ok(())
            })
        }
    };
    // Every outcome counts, so that a bench whose events all fail ends and says so rather
    // than wait for ever.
    let done = |h: &Herald| {
        ["delivered", "failed", "retry", "rejected"]
            .iter()
            .map(|outcome| handled(h, outcome))
            .sum::<u64>()
    };
    while done(&herald) < events as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let (herald_cores, machine_cores) = cores_busy(ticks, cpu_ticks(), cores);
    let cpu = format!(
        "    cpu: Herald {herald_cores:.2} cores, the machine {machine_cores:.2} of {cores} (the rest is smtp-sink and the kernel)"
    );
    let failed =
        handled(&herald, "failed") + handled(&herald, "retry") + handled(&herald, "rejected");
    shutdown.raise();
    running.await.unwrap().unwrap();
    if let Ok(url) = std::env::var("HERALD_BENCH_RABBITMQ_URL") {
        delete_topology(&url, &herald).await;
    }
    assert_eq!(failed, 0, "every message reaches the sink");
    ((events * recipients) as f64 / elapsed.as_secs_f64(), cpu)
}

/// Deletes the queues and exchanges Herald declared under the bench's prefix.
async fn delete_topology(url: &str, herald: &Herald) {
    let connected = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await;
    let Ok(connection) = connected else {
        return println!("  cleanup: no connection; bench queues are left on RabbitMQ");
    };
    if let Ok(channel) = connection.create_channel().await {
        let (deleted, of) =
            herald::broker::amqp::topology::delete(&channel, &herald.topology).await;
        println!("    cleanup: deleted {deleted} of {of} bench queues and exchanges");
    }
    let _ = connection.close(200, "bench done".into()).await;
}

fn main() {
    let messages = env_or("HERALD_BENCH_EMAILS", 100_000);
    let sessions = env_or("HERALD_BENCH_SESSIONS", 32);
    let concurrency = env_or("HERALD_BENCH_CONCURRENCY", 16 * sessions);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    let mut sink = start_sink(port);
    // Herald's welcome message in its layout is about 1.6 KB on the wire.
    let size = 1600;
    println!(
        "email bench: {messages} messages into smtp-sink, {sessions} SMTP connections each side, \
         {concurrency} events in Herald's worker at once"
    );
    let before = smtp_source(port, messages, sessions, size);
    println!("  smtp-source (Postfix's load client)       {before:>9.0} msgs/s");
    let broker = if std::env::var("HERALD_BENCH_RABBITMQ_URL").is_ok() {
        "RabbitMQ"
    } else {
        "embedded broker"
    };
    let shapes: Vec<usize> = std::env::var("HERALD_BENCH_RECIPIENTS")
        .unwrap_or_else(|_| "10,1".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("HERALD_BENCH_RECIPIENTS: numbers, such as 10,1")
        })
        .collect();
    let mut rates = Vec::new();
    for recipients in shapes {
        let (rate, cpu) = runtime.block_on(herald_rate(
            port,
            messages,
            recipients,
            (sessions, concurrency),
            Drain::EmailWorker,
        ));
        println!("  Herald, {recipients:>2} recipient(s) per event ({broker}) {rate:>9.0} msgs/s");
        println!("{cpu}");
        rates.push((recipients, rate));
    }
    // The ceiling that the queue, the worker pool and the ledger set by themselves: events
    // of one recipient, handled by a handler that renders and sends nothing.
    let (sendless, cpu) = runtime.block_on(herald_rate(
        port,
        messages,
        1,
        (sessions, concurrency),
        Drain::Sendless,
    ));
    println!(
        "  diagnostic: Herald sending nothing, 1 recipient per event {sendless:>9.0} events/s"
    );
    println!("{cpu}");
    // smtp-source again: its rate drifts by ±20% from run to run on a small machine, so
    // Herald is compared with the mean of the runs before and after it.
    let after = smtp_source(port, messages, sessions, size);
    println!("  smtp-source again                         {after:>9.0} msgs/s");
    let baseline = (before + after) / 2.0;
    for (recipients, rate) in rates {
        println!(
            "  ratio, {recipients:>2} recipient(s) per event: {:.2} × smtp-source's mean {baseline:.0} msgs/s (target 0.8 ×)",
            rate / baseline
        );
    }
    println!(
        "  diagnostic: queue, worker pool and ledger alone: {:.2} × smtp-source's mean (the ceiling for events of one recipient)",
        sendless / baseline
    );
    if let Some(rss) = peak_rss_mb("self") {
        println!("  peak RSS of the bench process (Herald in it): {rss:.1} MB");
    }
    let _ = sink.kill();
    let _ = sink.wait();
}
