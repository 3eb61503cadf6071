//! Shutdown: the process stops on SIGTERM, and a pool stops taking work but finishes what
//! it holds.

use crate::support::{self, eventually, publication};
use async_trait::async_trait;
use herald::app::Herald;
use herald::config::BrokerKind;
use herald::domain::{Envelope, EventKind};
use herald::shutdown::Shutdown;
use herald::workers::{Handler, Outcome};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::seeds::{audit_event, email_event};

/// Takes its time with each message, counting those it finished.
struct Slow(Arc<AtomicUsize>, Arc<AtomicUsize>);

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, _: &Envelope, _: u32) -> Outcome {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.1.fetch_add(1, Ordering::SeqCst);
        Outcome::Delivered
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_drains_its_in_flight_messages_on_shutdown_and_takes_no_more() {
    let dir = tempfile::TempDir::new().unwrap();
    let overrides = [("queues.audit.concurrency", "2")];
    let settings = support::settings(BrokerKind::Embedded, dir.path(), "", &overrides);
    let herald = Herald::start(settings).await.unwrap();
    support::tenant_key(&herald, "1").await;
    for _ in 0..5 {
        let (message, _) = publication(&herald.topology, EventKind::Audit, &audit_event());
        herald.broker.publish(message).await.unwrap();
    }
    let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pool = herald.worker_pool(
        EventKind::Audit,
        Arc::new(Slow(started.clone(), finished.clone())),
    );
    let shutdown = Shutdown::new();
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(10)));
    assert!(
        eventually(Duration::from_secs(5), || async {
            started.load(Ordering::SeqCst) == 2
        })
        .await
    );
    shutdown.raise();
    working.await.unwrap();
    assert_eq!(
        started.load(Ordering::SeqCst),
        2,
        "no new work after shutdown"
    );
    assert_eq!(
        finished.load(Ordering::SeqCst),
        2,
        "the work in flight finished"
    );
    let spec = herald.topology.queue(EventKind::Audit);
    let left = herald
        .broker
        .queue_stats(&spec.name)
        .await
        .unwrap()
        .message_count;
    assert_eq!(
        left, 3,
        "the two handled were acknowledged, the rest stay queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_on_defaults_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = testkit::free_port();
    // A fresh directory with nothing configured, as on a new clone; only the port differs
    // from the defaults so that tests can run side by side.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .current_dir(dir.path())
        .env("HERALD__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("RABBITMQ_URL")
        .env_remove("DATABASE_URL")
        .env_remove("HERALD__ADMIN__TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // On a first start Herald creates the tenant "default" and prints its key once.
    let stdout = child.stdout.take().unwrap();
    let key = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.trim()
                    .starts_with("hk_")
                    .then(|| line.trim().to_owned())
            })
    });
    let key = tokio::time::timeout(Duration::from_secs(20), key)
        .await
        .expect("the key is printed")
        .unwrap()
        .expect("a key line");
    let address = format!("127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(20), || {
            let address = address.clone();
            async move { support::reachable(&address) }
        })
        .await
    );
    let response = support::http_client()
        .post(format!("http://{address}/v1/notifications/email"))
        .bearer_auth(&key)
        .json(&{
            let mut event = email_event();
            event.as_object_mut().unwrap().remove("tenantId");
            event
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let outbox = dir.path().join("data/outbox");
    assert!(
        eventually(Duration::from_secs(10), || {
            let outbox = outbox.clone();
            async move { std::fs::read_dir(&outbox).is_ok_and(|mut d| d.next().is_some()) }
        })
        .await,
        "the email reached data/outbox"
    );
    assert!(
        dir.path().join("data/broker.db").exists(),
        "the embedded broker lives under data/"
    );

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "herald exits 0 after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_gives_up_on_an_unreachable_rabbitmq_and_says_why() {
    let dir = tempfile::TempDir::new().unwrap();
    // Nothing listens on port 1.
    let started = std::time::Instant::now();
    let migrating = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("migrate")
        .current_dir(dir.path())
        .env("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("HERALD__BROKER__RABBITMQ__MIGRATE_WAIT", "2s")
        .env_remove("DATABASE_URL")
        .output();
    let output = tokio::task::spawn_blocking(move || migrating.unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "migrate fails: {stderr}");
    assert!(
        took < Duration::from_secs(20),
        "migrate gave up after {took:?}, not after its 2 s wait"
    );
    assert!(
        stderr.contains("did not accept a connection within 2s") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("guest:guest"), "the password is not shown");
}

/// A Server-Sent Events stream never ends by itself, and graceful shutdown waits for every
/// open response: without a bound, one idle browser tab held SIGTERM for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_event_stream_does_not_hold_shutdown_past_the_grace() {
    let app = support::TestApp::spawn(
        BrokerKind::Embedded,
        herald::app::Roles::everything(),
        &[("workers.shutdown_grace", "1s")],
    )
    .await;
    let token = support::socket::token(&app, "ada").await;
    let stream = app
        .client
        .get(format!("{}/v1/realtime/sse?token={token}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let stopped = tokio::time::timeout(Duration::from_secs(15), app.stop()).await;
    assert!(
        stopped.is_ok(),
        "Herald stopped within its grace, the stream open"
    );
    drop(stream);
}
