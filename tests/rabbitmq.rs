//! RabbitMQ-only behaviour: events published straight to the exchanges by other services,
//! and a broker restart during a steady stream of sends.

mod common;

use async_trait::async_trait;
use common::{TestApp, audit_event, push_event};
use herald::app::{Herald, Roles};
use herald::config::BrokerKind;
use herald::domain::{Envelope, Event, EventKind};
use herald::shutdown::Shutdown;
use herald::workers::{Handler, Outcome};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection};
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Hands every envelope it receives to the test.
struct Recording(mpsc::UnboundedSender<Envelope>);

#[async_trait]
impl Handler for Recording {
    async fn handle(&self, envelope: &Envelope, _: u32) -> Outcome {
        let _ = self.0.send(envelope.clone());
        Outcome::Delivered
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_published_with_a_plain_amqp_client_reaches_the_push_handler() {
    let Some(app) = TestApp::spawn(BrokerKind::Rabbitmq, Roles::api_only(), &[]).await else {
        return;
    };
    // The envelope below names tenant 7, which must exist for its event to be handled.
    common::tenant_key(&app.herald, "7").await;
    let (seen, mut received) = mpsc::unbounded_channel();
    let shutdown = Shutdown::new();
    let pool = app
        .herald
        .worker_pool(EventKind::Push, Arc::new(Recording(seen)));
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));

    // What a Node.js service on the seeds' code publishes: only the payload, tenantId
    // inside it, to the `notifications` exchange with routing key `push.mobile`.
    let connection = Connection::connect(&common::rabbitmq_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let payload = push_event();
    let exchange = app.herald.topology.queue(EventKind::Push).exchange.clone();
    channel
        .basic_publish(
            exchange.as_str().into(),
            "push.mobile".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&serde_json::json!({"payload": payload})).unwrap(),
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_message_id("node-service-42".into()),
        )
        .await
        .unwrap();
    // A full envelope in the contract's wire format, as a Python service might send it.
    let envelope_body = serde_json::json!({
        "id": "0190d8c4-7c8e-7000-8000-000000000001", "kind": "push", "tenantId": "7",
        "createdAt": chrono::Utc::now().to_rfc3339(),
        "payload": {"recipientIds": ["user_9"], "title": "Hi", "body": "There", "platform": "web"}
    });
    channel
        .basic_publish(
            exchange.as_str().into(),
            "push.web".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&envelope_body).unwrap(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();

    // The pool handles messages concurrently, so they may arrive in either order.
    let mut envelopes = Vec::new();
    for _ in 0..2 {
        let envelope = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("the push handler received both events")
            .unwrap();
        envelopes.push(envelope);
    }
    envelopes.sort_by_key(|e| e.event.tenant_id().as_str().to_owned());
    let (bare, enveloped) = (&envelopes[0], &envelopes[1]);
    let expected = Event::parse(EventKind::Push, &payload).unwrap();
    assert_eq!(
        bare.event, expected,
        "the handler sees the payload as published"
    );
    assert_eq!(
        enveloped.id.to_string(),
        "0190d8c4-7c8e-7000-8000-000000000001"
    );
    assert_eq!(enveloped.event.tenant_id().as_str(), "7");
    assert_eq!(enveloped.event.routing_key(), "push.web");

    let _ = connection.close(200, "done".into()).await;
    shutdown.raise();
    working.await.unwrap();
    app.stop().await;
}

/// A RabbitMQ node of the test's own, on port 5673, so that stopping it disturbs no other
/// test. Started by the test and stopped when it ends; `rabbitmq-server` must be installed.
const RESTART_NODE: &str = "herald-restart@localhost";
const RESTART_PORT: &str = "5673";

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl")
        .args(["-n", RESTART_NODE])
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Stops the restart node when dropped, so that no stray broker is left running (and
/// taking CPU from benchmarks) after the tests.
struct StopsRestartNode;

impl Drop for StopsRestartNode {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["stop"]);
    }
}

/// Starts the restart node if it is not running; false if it cannot be had here.
fn restart_node() -> bool {
    if common::reachable(&format!("127.0.0.1:{RESTART_PORT}")) {
        return rabbitmqctl(&["start_app"]);
    }
    let base = std::env::temp_dir().join("herald-rabbitmq-restart");
    let _ = std::fs::create_dir_all(&base);
    // The server runs as the rabbitmq user, which must own its directory.
    let _ = Command::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(&base)
        .status();
    let started = Command::new("rabbitmq-server")
        .arg("-detached")
        .env("RABBITMQ_NODENAME", RESTART_NODE)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", RESTART_PORT)
        .env("RABBITMQ_DIST_PORT", "25673")
        .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", base.join("log"))
        .env("RABBITMQ_PID_FILE", base.join("pid"))
        .env("RABBITMQ_CONFIG_FILE", base.join("no-config"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", base.join("no-plugins"))
        .status()
        .is_ok_and(|s| s.success());
    // `await_startup` fails at once while the node has not yet registered with epmd, so
    // ask again until it answers or a generous deadline passes.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while started && std::time::Instant::now() < deadline {
        if rabbitmqctl(&["await_startup", "--timeout", "60"]) {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

/// Counts the events the audit pool receives, by id.
struct Counting(Arc<Mutex<HashSet<String>>>);

#[async_trait]
impl Handler for Counting {
    async fn handle(&self, envelope: &Envelope, _: u32) -> Outcome {
        self.0.lock().unwrap().insert(envelope.id.to_string());
        Outcome::Delivered
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_restart_loses_no_accepted_event() {
    herald::telemetry::init_logging();
    if !common::rabbitmq_available() {
        return;
    }
    let _stops = StopsRestartNode;
    if !restart_node() {
        let message =
            "a RabbitMQ node of its own could not be started (is rabbitmq-server installed?)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
        return;
    }
    let url = format!("amqp://guest:guest@127.0.0.1:{RESTART_PORT}/%2f");
    let dir = tempfile::TempDir::new().unwrap();
    let overrides = [
        ("broker.rabbitmq.url", url.as_str()),
        ("broker.publish_timeout", "2s"),
    ];
    let settings = common::settings(
        BrokerKind::Rabbitmq,
        dir.path(),
        &common::unique_prefix(),
        &overrides,
    );
    let herald = Herald::start(settings).await.unwrap();
    let key = common::tenant_key(&herald, "1").await;
    let shutdown = Shutdown::new();
    let (address, serving) = common::serve(&herald, Roles::api_only(), &shutdown).await;

    // A steady stream of sends from 4 clients while the broker goes away and comes back.
    let client = common::http_client();
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (client, address, sending, key) = (
            client.clone(),
            address.clone(),
            sending.clone(),
            key.clone(),
        );
        senders.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), 0usize);
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let response = client
                    .post(format!("{address}/v1/audit/events"))
                    .bearer_auth(&key)
                    .json(&audit_event())
                    .send()
                    .await
                    .expect("Herald answers every send");
                match response.status().as_u16() {
                    202 => accepted.push(
                        response.json::<serde_json::Value>().await.unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    ),
                    503 => {
                        assert!(response.headers().contains_key("retry-after"));
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("a send was answered {other}, neither 202 nor 503"),
                }
            }
            (accepted, refused)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rabbitmqctl(&["stop_app"]), "the node stops");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rabbitmqctl(&["start_app"]), "the node starts again");
    // Keep sending until Herald has recovered and sends are accepted again.
    let recovered = common::eventually(Duration::from_secs(30), || async {
        herald.broker.health().await.healthy
    })
    .await;
    assert!(
        recovered,
        "Herald reconnected to RabbitMQ: {:?}",
        herald.broker.health().await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for sender in senders {
        let (ids, refusals) = sender.await.unwrap();
        accepted.extend(ids);
        refused += refusals;
    }
    assert!(refused > 0, "sends during the outage were refused with 503");

    // Every event answered 202 is consumed afterwards.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let pool = herald.worker_pool(EventKind::Audit, Arc::new(Counting(seen.clone())));
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));
    let all_consumed = common::eventually(Duration::from_secs(30), || async {
        accepted.is_subset(&seen.lock().unwrap())
    })
    .await;
    let missing = accepted.difference(&seen.lock().unwrap()).count();
    assert!(
        all_consumed,
        "{missing} of {} accepted events were never consumed",
        accepted.len()
    );
    eprintln!(
        "{} accepted, {refused} refused with 503, all accepted consumed",
        accepted.len()
    );
    shutdown.raise();
    working.await.unwrap();
    serving.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_take_and_deliver_events() {
    let overrides = [("broker.rabbitmq.quorum_queues", "true")];
    let Some(app) = TestApp::spawn(BrokerKind::Rabbitmq, Roles::api_only(), &overrides).await
    else {
        return;
    };
    let (seen, mut received) = mpsc::unbounded_channel();
    let shutdown = Shutdown::new();
    let pool = app
        .herald
        .worker_pool(EventKind::Audit, Arc::new(Recording(seen)));
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));
    let response = app.post_json("/v1/audit/events", &audit_event()).await;
    assert_eq!(response.status(), 202);
    let envelope = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the event was delivered from the quorum queue")
        .unwrap();
    assert_eq!(envelope.event.kind(), EventKind::Audit);
    shutdown.raise();
    working.await.unwrap();
    app.stop().await;
}
