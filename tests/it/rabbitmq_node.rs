//! Faults of RabbitMQ itself, on a node of the tests' own (port 5673) that they stop,
//! start and put under a resource alarm: a restart during a stream of sends, the real-time
//! bus across a restart, an alarm with idempotent clients, and a broker down when Herald
//! starts. The node is shared, so these tests run one at a time (the `rabbitmq-node` test
//! group in `.config/nextest.toml`); each starts it if it is not running and stops it when
//! it ends.

use crate::support::{self, TestApp};
use async_trait::async_trait;
use herald::app::{Herald, Roles};
use herald::config::BrokerKind;
use herald::domain::{Envelope, EventKind};
use herald::shutdown::Shutdown;
use herald::workers::{Handler, Outcome};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::seeds::audit_event;

/// A RabbitMQ node of the tests' own, on port 5673, so that stopping it disturbs no other
/// test; `rabbitmq-server` must be installed.
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
    if support::reachable(&format!("127.0.0.1:{RESTART_PORT}")) {
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

/// The node's URL.
fn node_url() -> String {
    format!("amqp://guest:guest@127.0.0.1:{RESTART_PORT}/%2f")
}

/// The node, started for this test (and stopped when the guard drops); fails the test,
/// saying why, when it cannot be started here.
fn node() -> StopsRestartNode {
    let guard = StopsRestartNode;
    assert!(
        restart_node(),
        "this test needs a RabbitMQ node of its own on port {RESTART_PORT}, and it could not be \
         started (is rabbitmq-server installed?)"
    );
    guard
}

/// Herald on the node, with `roles` and `overrides`.
async fn on_node(roles: Roles, overrides: &[(&str, &str)]) -> (StopsRestartNode, TestApp) {
    let node = node();
    let url = node_url();
    let mut overrides = overrides.to_vec();
    overrides.push(("broker.rabbitmq.url", url.as_str()));
    let app = TestApp::spawn(BrokerKind::Rabbitmq, roles, &overrides).await;
    (node, app)
}

/// Whether Herald's `/health/rabbitmq` says all is well (the broker and the real-time bus).
async fn rabbitmq_healthy(app: &TestApp) -> bool {
    let response = app
        .client
        .get(format!("{}/health/rabbitmq", app.address))
        .send()
        .await;
    response.is_ok_and(|r| r.status() == StatusCode::OK)
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
#[ignore = "needs rabbitmq-server, to start a RabbitMQ node of its own on 127.0.0.1:5673; cargo nextest run --run-ignored all runs it"]
async fn a_rabbitmq_restart_loses_no_accepted_event() {
    herald::telemetry::init_logging();
    let _node = node();
    let url = node_url();
    let dir = tempfile::TempDir::new().unwrap();
    let overrides = [
        ("broker.rabbitmq.url", url.as_str()),
        ("broker.publish_timeout", "2s"),
    ];
    let settings = support::settings(
        BrokerKind::Rabbitmq,
        dir.path(),
        &support::unique_prefix(),
        &overrides,
    );
    let herald = Herald::start(settings).await.unwrap();
    let key = support::tenant_key(&herald, "1").await;
    let shutdown = Shutdown::new();
    let (address, serving) = support::serve(&herald, Roles::api_only(), &shutdown).await;

    // A steady stream of sends from 4 clients while the broker goes away and comes back.
    let client = support::http_client();
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
    let recovered = support::eventually(Duration::from_secs(30), || async {
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
    let all_consumed = support::eventually(Duration::from_secs(30), || async {
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

/// The client properties of each connection the node has open, one line a connection.
fn connections() -> Vec<String> {
    let listed = Command::new("rabbitmqctl")
        .args(["-n", RESTART_NODE, "list_connections", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(listed.status.success(), "rabbitmqctl lists the connections");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        // Each connection's line names it; headers and notices do not.
        .filter(|line| line.contains("connection_name"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rabbitmq-server, to start a RabbitMQ node of its own on 127.0.0.1:5673; cargo nextest run --run-ignored all runs it"]
async fn one_herald_holds_one_connection_with_its_realtime_bus_on_it() {
    let (_node, app) = on_node(Roles::everything(), &[]).await;
    // A connected user: the bus is linked up and binds the user's key.
    let token = support::socket::token(&app, "bob").await;
    let mut bob = support::socket::open(&app.address, &token, None).await;
    support::socket::until_ready(&mut bob).await;
    assert!(
        rabbitmq_healthy(&app).await,
        "the broker and its bus are up"
    );
    let open = connections();
    assert_eq!(
        open.len(),
        1,
        "the API, the worker pools and the real-time bus share one connection: {open:?}"
    );
    // And the bus works over it: a chat message reaches bob through a poke.
    let message = json!({
        "messageId": "one-connection", "conversationId": "c1", "senderId": "ada",
        "recipientIds": ["bob"], "content": "over the shared connection", "messageType": "text",
        "timestamp": "2026-12-02T10:00:00Z",
    });
    let response = app.post_json("/v1/chat/messages", &message).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let frame = support::socket::next(&mut bob).await;
    assert_eq!(frame["data"]["messageId"], "one-connection", "{frame}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rabbitmq-server, to start a RabbitMQ node of its own on 127.0.0.1:5673; cargo nextest run --run-ignored all runs it"]
async fn the_realtime_bus_comes_back_after_a_node_restart() {
    let (_node, app) = on_node(Roles::everything(), &[]).await;
    let token = support::socket::token(&app, "bob").await;
    let mut bob = support::socket::open(&app.address, &token, None).await;
    support::socket::until_ready(&mut bob).await;
    assert!(rabbitmq_healthy(&app).await);

    assert!(rabbitmqctl(&["stop_app"]), "the node stops");
    assert!(
        support::eventually(Duration::from_secs(10), || async {
            !rabbitmq_healthy(&app).await
        })
        .await,
        "health says the broker and its bus are down"
    );
    assert!(rabbitmqctl(&["start_app"]), "the node starts again");
    assert!(
        support::eventually(Duration::from_secs(60), || async {
            rabbitmq_healthy(&app).await
        })
        .await,
        "Herald's connection and real-time bus came back"
    );
    // The chat pool consumes again too (it retries every second).
    let chat = app.herald.topology.queue(EventKind::Chat).name.clone();
    assert!(
        support::eventually(Duration::from_secs(30), || async {
            app.herald
                .broker
                .queue_stats(&chat)
                .await
                .is_ok_and(|s| s.consumer_count > 0)
        })
        .await
    );

    let message = json!({
        "messageId": "after-restart", "conversationId": "c1", "senderId": "ada",
        "recipientIds": ["bob"], "content": "still there?", "messageType": "text",
        "timestamp": "2026-12-02T10:00:00Z",
    });
    let posted = Instant::now();
    let response = app.post_json("/v1/chat/messages", &message).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let frame = support::socket::next(&mut bob).await;
    let took = posted.elapsed();
    assert_eq!(frame["data"]["messageId"], "after-restart", "{frame}");
    assert!(
        took < Duration::from_millis(100),
        "a message posted after the restart took {took:?} to reach its recipient"
    );
    eprintln!("after the restart, POST to WebSocket took {took:?}");
    app.stop().await;
}

/// Sets the node's memory watermark: a tiny one raises the memory alarm at once, and
/// RabbitMQ blocks every publishing connection until it is set back.
fn memory_alarm(raised: bool) {
    let watermark = if raised { "0.000001" } else { "0.4" };
    assert!(
        rabbitmqctl(&["set_vm_memory_high_watermark", watermark]),
        "setting the watermark"
    );
}

/// Sets the alarm back when dropped, so that a failed test leaves the node usable.
struct ClearsAlarm;

impl Drop for ClearsAlarm {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rabbitmq-server, to start a RabbitMQ node of its own on 127.0.0.1:5673; cargo nextest run --run-ignored all runs it"]
async fn during_an_alarm_sends_are_refused_and_idempotent_retries_send_each_email_once() {
    let Some(relay) = support::smtp_relay::SmtpRelay::start() else {
        return;
    };
    let mut overrides = relay.overrides();
    overrides.push(("broker.publish_timeout", "2s"));
    let (_node, app) = on_node(Roles::everything(), &overrides).await;
    let _clears = ClearsAlarm;
    let app = Arc::new(app);
    memory_alarm(true);
    // Eight clients, each sending one email under a key of its own and repeating it,
    // as the seeds' clients do, until it is accepted.
    let mut clients = Vec::new();
    for client in 0..8 {
        let app = app.clone();
        clients.push(tokio::spawn(async move {
            let key = format!("alarm-{client}");
            let to = format!("client-{client}@example.com");
            let body = json!({"to": [to], "template": "welcome", "data": {"name": "Ada"}});
            let mut refusals: Vec<(Duration, Value)> = Vec::new();
            loop {
                let started = Instant::now();
                let response = app
                    .client
                    .post(format!("{}/v1/notifications/email", app.address))
                    .bearer_auth(&app.key)
                    .header("idempotency-key", &key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let answer: Value = response.json().await.unwrap();
                match status.as_u16() {
                    202 => return (to, answer["id"].as_str().unwrap().to_owned(), refusals),
                    503 => refusals.push((started.elapsed(), answer)),
                    other => panic!("{key} was answered {other}: {answer}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    memory_alarm(false);
    let mut accepted = Vec::new();
    for client in clients {
        accepted.push(
            tokio::time::timeout(Duration::from_secs(60), client)
                .await
                .expect("every client is accepted once the alarm clears")
                .unwrap(),
        );
    }
    let mut quick = 0;
    let mut refusals = 0;
    for (to, id, refused) in &accepted {
        assert!(!refused.is_empty(), "{to} was refused during the alarm");
        for (took, answer) in refused {
            refusals += 1;
            quick += usize::from(*took < Duration::from_millis(500));
            // Every refusal names the one id the key is bound to.
            assert_eq!(
                answer["error"]["details"][0]["id"].as_str(),
                Some(id.as_str()),
                "{to}: {answer}"
            );
        }
    }
    // A blocked connection refuses at once; at most the first publish of each channel
    // waits out the timeout before RabbitMQ says it is blocked.
    assert!(
        quick * 2 > refusals,
        "{quick} of {refusals} refusals came at once"
    );
    // Each email arrives once, even where a refused publish was queued after all.
    relay.wait_for(accepted.len()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = relay.received();
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for message in &received {
        *per_recipient
            .entry(message["rcptTos"][0].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (to, id, _) in &accepted {
        assert_eq!(
            per_recipient.get(to),
            Some(&1),
            "{to} ({id}): {per_recipient:?}"
        );
        let status = app
            .notification_when(id, |s| s["status"] == "delivered")
            .await;
        assert_eq!(status["status"], "delivered", "{status}");
    }
    eprintln!(
        "{} keys, {refusals} refusals ({quick} at once), each email delivered once",
        accepted.len()
    );
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rabbitmq-server, to start a RabbitMQ node of its own on 127.0.0.1:5673; cargo nextest run --run-ignored all runs it"]
async fn with_rabbitmq_down_at_start_herald_answers_503_until_it_is_up() {
    let _node = node();
    assert!(rabbitmqctl(&["stop_app"]), "the node stops");
    let dir = tempfile::TempDir::new().unwrap();
    let url = node_url();
    let settings = support::settings(
        BrokerKind::Rabbitmq,
        dir.path(),
        &support::unique_prefix(),
        &[("broker.rabbitmq.url", url.as_str())],
    );
    let started = Instant::now();
    let herald = tokio::time::timeout(Duration::from_secs(30), Herald::start(settings))
        .await
        .expect("Herald starts without waiting for RabbitMQ")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    let key = support::tenant_key(&herald, "1").await;
    let shutdown = Shutdown::new();
    let (address, serving) = support::serve(&herald, Roles::everything(), &shutdown).await;
    let client = support::http_client();
    let get = |path: &str| client.get(format!("{address}{path}")).send();
    for path in ["/health/ready", "/health/rabbitmq"] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body: Value = response.json().await.unwrap();
        eprintln!("{path} while RabbitMQ is down: {body}");
    }
    let send = || {
        client
            .post(format!("{address}/v1/notifications/email"))
            .bearer_auth(&key)
            .json(&testkit::seeds::email_event())
            .send()
    };
    let refused = send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));

    assert!(rabbitmqctl(&["start_app"]), "the node starts");
    assert!(
        support::eventually(Duration::from_secs(60), || async {
            get("/health/ready")
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await,
        "Herald connected once RabbitMQ was up"
    );
    let accepted = send().await.unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let outbox = dir.path().join("outbox");
    assert!(
        support::eventually(Duration::from_secs(30), || {
            let outbox = outbox.clone();
            async move { std::fs::read_dir(&outbox).is_ok_and(|mut d| d.next().is_some()) }
        })
        .await,
        "the email was delivered"
    );
    shutdown.raise();
    serving.await.unwrap().unwrap();
    support::delete_rabbitmq_topology(&herald.topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rabbitmq-server, to start a RabbitMQ node of its own on 127.0.0.1:5673; cargo nextest run --run-ignored all runs it"]
async fn emails_accepted_across_broker_restarts_are_each_delivered_and_duplicates_are_bounded() {
    const RESTARTS: usize = 2;
    let Some(relay) = support::smtp_relay::SmtpRelay::start() else {
        return;
    };
    let mut overrides = relay.overrides();
    overrides.extend([
        ("broker.publish_timeout", "2s"),
        ("queues.email.backoff", "[\"1s\"]"),
    ]);
    let (_node, app) = on_node(Roles::everything(), &overrides).await;
    herald::telemetry::init_logging();
    let clients = support::accounting::Clients::start(8, &app.address, &app.key);
    for _ in 0..RESTARTS {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(rabbitmqctl(&["stop_app"]), "the node stops");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(rabbitmqctl(&["start_app"]), "the node starts again");
        let back = Instant::now();
        assert!(
            support::eventually(Duration::from_secs(60), || async {
                rabbitmq_healthy(&app).await
            })
            .await,
            "Herald reconnected"
        );
        eprintln!("Herald healthy {:?} after the node started", back.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = clients.stop().await;
    let tally = support::accounting::tally(
        &relay,
        &log,
        &app.address,
        &app.key,
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "{}",
        tally.report(&format!("{RESTARTS} broker restarts"), &log)
    );
    assert!(log.refused > 0, "the restarts refused sends");
    // A duplicate is an email sent whose acknowledgement the restart lost, or an
    // unconfirmed publish repeated: at most what was in flight (the queue's concurrency,
    // and the clients' own requests) at each restart.
    tally.assert_accounted((128 + 8) * RESTARTS);
    app.stop().await;
}
