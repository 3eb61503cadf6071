//! The broker conformance suite: every test runs against the embedded broker and against
//! RabbitMQ, which must behave alike.

use crate::support::{self, TestApp, eventually, publication};
use async_trait::async_trait;
use herald::app::{Herald, Roles};
use herald::config::BrokerKind;
use herald::domain::{EventKind, NotificationId};
use herald::shutdown::Shutdown;
use herald::workers::{Handler, Outcome};
use reqwest::StatusCode;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::seeds::{audit_event, email_event, push_event};

/// Runs each named scenario once per broker.
macro_rules! conformance {
    ($($scenario:ident),+ $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(herald::config::BrokerKind::Embedded).await;
            })+
        }
        mod rabbitmq {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs RabbitMQ on 127.0.0.1:5672 (HERALD_TEST_RABBITMQ_URL); cargo nextest run --run-ignored all runs it"]
            async fn $scenario() {
                super::$scenario(herald::config::BrokerKind::Rabbitmq).await;
            })+
        }
    };
}

conformance!(
    the_declared_topology_routes_every_key_of_the_contract,
    a_full_queue_answers_503_and_keeps_what_it_holds,
    an_expired_message_is_dead_lettered_with_its_reason,
    a_failing_handler_is_retried_with_growing_delays_then_dead_lettered,
    a_worker_killed_mid_message_has_it_delivered_again,
    dead_letters_are_listed_with_their_reason_and_replayed_onto_their_queue,
    a_replay_takes_each_dead_letter_once_and_the_ledger_keeps_every_attempt,
    a_handler_that_panics_has_its_message_retried,
    an_event_for_an_unknown_tenant_is_rejected_and_nothing_is_sent_or_stored,
    dead_letters_past_their_bounds_are_dropped_logged_and_counted,
);

/// The contract's topology table: queue, exchange, routing keys, TTL (ms), max length.
const CONTRACT: [(&str, &str, [&str; 2], i64, i64); 4] = [
    (
        "chat.messages",
        "messages",
        ["chat.direct", "chat.group"],
        86_400_000,
        100_000,
    ),
    (
        "push.notifications",
        "notifications",
        ["push.mobile", "push.web"],
        3_600_000,
        50_000,
    ),
    (
        "email.notifications",
        "notifications",
        ["email.send", "email.template"],
        3_600_000,
        25_000,
    ),
    (
        "audit.events",
        "audit",
        ["audit.track", "audit.compliance"],
        604_800_000,
        500_000,
    ),
];

async fn the_declared_topology_routes_every_key_of_the_contract(kind: BrokerKind) {
    let app = TestApp::spawn(kind, Roles::api_only(), &[]).await;
    let herald = &app.herald;
    if kind == BrokerKind::Rabbitmq {
        assert_rabbitmq_queues_have_the_contract_arguments(herald).await;
    }
    for (queue, exchange, keys, ..) in CONTRACT {
        let spec = herald.topology.queue_named(queue).unwrap();
        assert!(spec.exchange.ends_with(exchange));
        for (published, key) in keys.iter().enumerate() {
            // Built by hand, not with `Publication::of`: a bare payload under each routing
            // key of the contract, as another service may publish one, is no envelope.
            let body = serde_json::to_vec(&serde_json::json!({"payload": {}})).unwrap();
            herald
                .broker
                .publish(herald::broker::Publication {
                    exchange: spec.exchange.clone(),
                    routing_key: (*key).to_owned(),
                    message_id: NotificationId::new().to_string(),
                    body: body.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("{key} is routed: {e}"));
            let stats = herald.broker.queue_stats(&spec.name).await.unwrap();
            assert_eq!(
                stats.message_count,
                published as u64 + 1,
                "{key} lands in {queue}"
            );
        }
    }
    app.stop().await;
}

/// Re-declares each queue with the contract's arguments, written out here as the seeds'
/// services declare them (a TTL and a length, nothing else): RabbitMQ accepts a
/// re-declaration only if the arguments are exactly those the queue has. Overflow and
/// dead-lettering are in Herald's policy, read back from the management API.
async fn assert_rabbitmq_queues_have_the_contract_arguments(herald: &Herald) {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let connection = lapin::Connection::connect(&support::rabbitmq_url(), Default::default())
        .await
        .unwrap();
    let declare = |name: String, ttl: i64, max_length: i64| {
        let connection = &connection;
        async move {
            let channel = connection.create_channel().await.unwrap();
            let mut args = FieldTable::default();
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            args.insert("x-max-length".into(), AMQPValue::LongLongInt(max_length));
            let options = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(name.as_str().into(), options, args)
                .await
        }
    };
    for (queue, _, _, ttl, max_length) in CONTRACT {
        let name = herald.topology.queue_named(queue).unwrap().name.clone();
        declare(name.clone(), ttl, max_length)
            .await
            .unwrap_or_else(|e| panic!("{queue} has the contract's arguments: {e}"));
        assert!(
            declare(name.clone(), ttl + 1, max_length).await.is_err(),
            "a different TTL is refused, so the check above has teeth"
        );
        let policy = support::seeds::management(&format!("policies/%2F/herald.{name}")).await;
        let definition = &policy["definition"];
        assert_eq!(definition["overflow"], "reject-publish", "{policy}");
        assert_eq!(definition["dead-letter-exchange"], "", "{policy}");
        assert_eq!(definition["dead-letter-routing-key"], format!("{name}.dlq"));
        assert_eq!(definition["max-length"], max_length, "{policy}");
    }
    let _ = connection.close(200, "checked".into()).await;
}

async fn a_full_queue_answers_503_and_keeps_what_it_holds(kind: BrokerKind) {
    let overrides = [("queues.audit.max_length", "3")];
    let app = TestApp::spawn(kind, Roles::api_only(), &overrides).await;
    let mut accepted = Vec::new();
    for _ in 0..3 {
        let response = app.post_json("/v1/audit/events", &audit_event()).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: serde_json::Value = response.json().await.unwrap();
        accepted.push(body["id"].as_str().unwrap().to_owned());
    }
    let refused = app.post_json("/v1/audit/events", &audit_event()).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_unavailable");
    // Refused means not queued: the ledger, written while the broker was asked, forgets it.
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["status"], "rejected", "{body}");
    let (status, _) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/notifications/{}", detail["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused event has no record"
    );

    let spec = app.herald.topology.queue(EventKind::Audit).clone();
    let stats = app.herald.broker.queue_stats(&spec.name).await.unwrap();
    assert_eq!(stats.message_count, 3, "nothing already queued was dropped");
    let mut consumer = app.herald.broker.consume(&spec, 10).await.unwrap();
    let mut kept = Vec::new();
    for _ in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a queued message is delivered")
            .unwrap()
            .unwrap();
        kept.push(delivery.message_id.clone().unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(kept, accepted, "the first three, in order");
    consumer.cancel().await;
    drop(consumer);
    app.stop().await;
}

async fn an_expired_message_is_dead_lettered_with_its_reason(kind: BrokerKind) {
    let overrides = [("queues.push.message_ttl", "1s")];
    let app = TestApp::spawn(kind, Roles::api_only(), &overrides).await;
    let response = app.post_json("/v1/notifications/push", &push_event()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let letters = app.dead_letters(EventKind::Push, 1).await;
    assert_eq!(
        letters.len(),
        1,
        "the expired message reached the dead-letter queue"
    );
    let (broker, spec) = (
        &app.herald.broker,
        app.herald.topology.queue(EventKind::Push),
    );
    assert_eq!(letters[0].reason, "expired");
    assert_eq!(letters[0].message_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        broker.queue_stats(&spec.name).await.unwrap().message_count,
        0
    );
    app.stop().await;
}

/// A handler that always fails for now, recording when each attempt came.
#[derive(Default)]
struct AlwaysFailing {
    attempts: Mutex<Vec<(u32, Instant)>>,
}

#[async_trait]
impl Handler for AlwaysFailing {
    async fn handle(&self, _: &herald::domain::Envelope, attempt: u32) -> Outcome {
        self.attempts
            .lock()
            .unwrap()
            .push((attempt, Instant::now()));
        Outcome::retry("the relay answered 451 try again later")
    }
}

async fn a_failing_handler_is_retried_with_growing_delays_then_dead_lettered(kind: BrokerKind) {
    let overrides = [
        ("queues.email.max_attempts", "3"),
        ("queues.email.backoff", "[\"300ms\", \"900ms\"]"),
    ];
    let app = TestApp::spawn(kind, Roles::api_only(), &overrides).await;
    let handler = Arc::new(AlwaysFailing::default());
    let shutdown = Shutdown::new();
    let pool = app.herald.worker_pool(EventKind::Email, handler.clone());
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));
    let response = app
        .post_json("/v1/notifications/email", &email_event())
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let letters = app.dead_letters(EventKind::Email, 1).await;
    assert_eq!(
        letters.len(),
        1,
        "the message was dead-lettered after its last attempt"
    );
    let letter = &letters[0];
    assert_eq!(letter.reason, "failed");
    assert_eq!(letter.attempts, 3);
    assert!(
        letter.last_error.as_deref().unwrap().contains("451"),
        "{letter:?}"
    );

    let attempts = handler.attempts.lock().unwrap().clone();
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let first_wait = attempts[1].1 - attempts[0].1;
    let second_wait = attempts[2].1 - attempts[1].1;
    assert!(first_wait >= Duration::from_millis(300), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(900), "{second_wait:?}");
    assert!(second_wait > first_wait);
    shutdown.raise();
    working.await.unwrap();
    app.stop().await;
}

/// A handler that announces the message it holds on stdout, then never finishes.
struct Stalling;

#[async_trait]
impl Handler for Stalling {
    async fn handle(&self, envelope: &herald::domain::Envelope, _: u32) -> Outcome {
        use std::io::Write;
        let mut out = std::io::stdout();
        writeln!(out, "HANDLING {}", envelope.id).unwrap();
        out.flush().unwrap();
        std::future::pending().await
    }
}

/// Not a test on its own: the worker process that `a_worker_killed_mid_message_...`
/// starts and kills. It reads its settings from the environment the parent gives it.
#[tokio::test]
#[ignore = "run as a child process by a_worker_killed_mid_message_has_it_delivered_again"]
async fn stalling_worker_process() {
    if std::env::var("HERALD_TEST_CHILD").is_err() {
        return;
    }
    let settings = herald::config::Settings::load(std::path::Path::new("/nonexistent")).unwrap();
    let herald = Herald::start(settings).await.unwrap();
    let pool = herald.worker_pool(EventKind::Audit, Arc::new(Stalling));
    pool.run(Shutdown::new(), Duration::ZERO).await;
}

async fn a_worker_killed_mid_message_has_it_delivered_again(kind: BrokerKind) {
    if kind == BrokerKind::Rabbitmq {
        support::require_rabbitmq();
    }
    let dir = tempfile::TempDir::new().unwrap();
    let prefix = support::unique_prefix();
    let settings = support::settings(kind, dir.path(), &prefix, &[]);
    let herald = Herald::start(settings.clone()).await.unwrap();
    // The child's pool handles only events of tenants that exist, in the same store.
    support::tenant_key(&herald, "1").await;
    let (message, id) = publication(&herald.topology, EventKind::Audit, &audit_event());
    herald.broker.publish(message).await.unwrap();
    let topology = herald.topology.clone();
    // The embedded broker's file belongs to one process at a time: hand it to the child.
    herald.broker.close().await;
    drop(herald);

    // The test binary names a test by its module path without the crate's name.
    let (_, module) = module_path!()
        .split_once("::")
        .expect("a module of the binary");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(format!("{module}::stalling_worker_process"))
        .args(["--exact", "--ignored", "--nocapture"])
        .env("HERALD_TEST_CHILD", "1")
        .env(
            "HERALD__BROKER__KIND",
            if kind == BrokerKind::Embedded {
                "embedded"
            } else {
                "rabbitmq"
            },
        )
        .env("HERALD__BROKER__PREFIX", &prefix)
        .env(
            "HERALD__DATABASE__URL",
            format!("sqlite://{}", dir.path().join("herald.db").display()),
        )
        .env(
            "HERALD__BROKER__EMBEDDED__PATH",
            dir.path().join("broker.db"),
        )
        .env("HERALD__BROKER__RABBITMQ__URL", support::rabbitmq_url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let expected = format!("HANDLING {id}");
    let seen = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == expected)
    });
    let seen = tokio::time::timeout(Duration::from_secs(60), seen).await;
    child.kill().unwrap(); // SIGKILL: no chance to settle anything.
    child.wait().unwrap();
    assert!(matches!(seen, Ok(Ok(true))), "the child took the message");

    let herald = Herald::start(settings).await.unwrap();
    let spec = herald.topology.queue(EventKind::Audit).clone();
    let mut consumer = herald.broker.consume(&spec, 1).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("the message is delivered again")
        .unwrap()
        .unwrap();
    assert_eq!(
        delivery.message_id.as_deref(),
        Some(id.to_string().as_str())
    );
    if kind == BrokerKind::Rabbitmq {
        assert!(delivery.redelivered, "RabbitMQ marks it redelivered");
    }
    assert_eq!(delivery.attempt, 1, "a crash is not a failed attempt");
    delivery.ack().await.unwrap();
    consumer.cancel().await;
    drop(consumer);
    if kind == BrokerKind::Rabbitmq {
        support::delete_rabbitmq_topology(&topology).await;
    }
}

#[tokio::test]
async fn an_embedded_lease_that_runs_out_is_delivered_again_and_fenced() {
    let dir = tempfile::TempDir::new().unwrap();
    let overrides = [("broker.embedded.lease_timeout", "300ms")];
    let settings = support::settings(BrokerKind::Embedded, dir.path(), "", &overrides);
    let herald = Herald::start(settings).await.unwrap();
    let (message, id) = publication(&herald.topology, EventKind::Audit, &audit_event());
    herald.broker.publish(message).await.unwrap();
    let spec = herald.topology.queue(EventKind::Audit).clone();
    let mut first = herald.broker.consume(&spec, 1).await.unwrap();
    let held = first.next().await.unwrap().unwrap();
    assert!(!held.redelivered);
    let mut second = herald.broker.consume(&spec, 1).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .expect("delivered again once the lease ran out")
        .unwrap()
        .unwrap();
    assert_eq!(again.message_id.as_deref(), Some(id.to_string().as_str()));
    assert!(again.redelivered);
    assert!(
        held.ack().await.is_err(),
        "the worker that lost its lease cannot settle"
    );
    again.ack().await.unwrap();
    assert_eq!(
        herald
            .broker
            .queue_stats(&spec.name)
            .await
            .unwrap()
            .message_count,
        0
    );
}

/// The admin token of the tests that look at dead letters through the admin API.
const ADMIN_TOKEN: &str = "an-admin-token-for-tests";

/// Fails for good on its first attempt, and delivers on later ones.
struct FailsFirstTime;

#[async_trait]
impl Handler for FailsFirstTime {
    async fn handle(&self, _: &herald::domain::Envelope, attempt: u32) -> Outcome {
        if attempt == 1 {
            Outcome::failed("550 mailbox unavailable")
        } else {
            Outcome::Delivered
        }
    }
}

async fn dead_letters_are_listed_with_their_reason_and_replayed_onto_their_queue(kind: BrokerKind) {
    let app = TestApp::spawn(kind, Roles::api_only(), &[("admin.token", ADMIN_TOKEN)]).await;
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN_TOKEN).send();
    let response = app
        .post_json("/v1/notifications/email", &email_event())
        .await;
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shutdown = Shutdown::new();
    let pool = app
        .herald
        .worker_pool(EventKind::Email, Arc::new(FailsFirstTime));
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));
    assert_eq!(app.dead_letters(EventKind::Email, 1).await.len(), 1);
    shutdown.raise();
    working.await.unwrap();

    let url = |path: &str| format!("{}{path}", app.address);
    let queues: serde_json::Value = admin(app.client.get(url("/admin/queues")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queues["email.notifications"]["messageCount"], 0);
    assert_eq!(queues["email.notifications.dlq"]["messageCount"], 1);
    assert!(queues["chat.messages"]["consumerCount"].is_number());

    let letters: serde_json::Value = admin(
        app.client
            .get(url("/admin/queues/email.notifications/dead-letters")),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let letter = &letters["items"][0];
    assert_eq!(letter["reason"], "failed");
    assert_eq!(letter["messageId"], id.as_str());
    assert!(letter["lastError"].as_str().unwrap().contains("550"));
    assert_eq!(letter["message"]["payload"]["template"], "welcome");
    let bad_limit = admin(app.client.get(url(
        "/admin/queues/email.notifications/dead-letters?limit=many",
    )))
    .await
    .unwrap();
    assert_eq!(bad_limit.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = admin(
        app.client
            .get(url("/admin/queues/fax.messages/dead-letters")),
    )
    .await
    .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let replayed: serde_json::Value = admin(
        app.client
            .post(url("/admin/queues/email.notifications/dead-letters/replay")),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(replayed["replayed"], 1);
    let spec = app.herald.topology.queue(EventKind::Email).clone();
    assert_eq!(
        app.herald
            .broker
            .queue_stats(&spec.dead_letter_queue())
            .await
            .unwrap()
            .message_count,
        0
    );
    let mut consumer = app.herald.broker.consume(&spec, 1).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        again.attempt, 1,
        "a replayed message starts its attempts afresh"
    );
    again.ack().await.unwrap();
    consumer.cancel().await;
    drop(consumer);
    app.stop().await;
}

/// Fails every attempt for good.
struct AlwaysRefused;

#[async_trait]
impl Handler for AlwaysRefused {
    async fn handle(&self, _: &herald::domain::Envelope, _: u32) -> Outcome {
        Outcome::failed("550 mailbox unavailable")
    }
}

/// Sends `count` emails and answers their ids.
async fn send_emails(app: &TestApp, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let response = app
            .post_json("/v1/notifications/email", &email_event())
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: serde_json::Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn a_replay_takes_each_dead_letter_once_and_the_ledger_keeps_every_attempt(kind: BrokerKind) {
    let app = TestApp::spawn(kind, Roles::api_only(), &[("admin.token", ADMIN_TOKEN)]).await;
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN_TOKEN).send();
    let url = |path: &str| format!("{}{path}", app.address);
    let ids = send_emails(&app, 4).await;
    // The pool keeps running through the replay: each replayed letter fails again at once
    // and comes back to the dead-letter queue while the replay is still taking letters.
    let shutdown = Shutdown::new();
    let pool = app
        .herald
        .worker_pool(EventKind::Email, Arc::new(AlwaysRefused));
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));
    let letters = app.dead_letters(EventKind::Email, 4).await;
    assert_eq!(letters.len(), 4);
    for letter in &letters {
        assert_eq!(
            letter.routing_key, "email.template",
            "a dead letter answers the routing key it was published with"
        );
    }

    for limit in ["0", "1001", "-1"] {
        let refused = admin(app.client.post(url(&format!(
            "/admin/queues/email.notifications/dead-letters/replay?limit={limit}"
        ))))
        .await
        .unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit={limit}"
        );
    }
    let replayed: serde_json::Value = admin(app.client.post(url(
        "/admin/queues/email.notifications/dead-letters/replay?limit=50",
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(replayed["replayed"], 4, "each letter is replayed once");

    // Every replayed letter was tried once more, failed, and is back: four letters, each
    // with its attempts before and after the replay in the ledger.
    let spec = app.herald.topology.queue(EventKind::Email).clone();
    for id in &ids {
        let status = app
            .notification_when(id, |s| s["deliveries"][0]["attempts"] == 2)
            .await;
        assert_eq!(status["status"], "failed", "{status}");
        assert_eq!(
            status["deliveries"][0]["attempts"], 2,
            "the attempt before the replay still counts: {status}"
        );
    }
    let back = app.dead_letters(EventKind::Email, 4).await;
    assert_eq!(back.len(), 4, "{back:?}");
    assert_eq!(
        app.herald
            .broker
            .queue_stats(&spec.dead_letter_queue())
            .await
            .unwrap()
            .message_count,
        4
    );
    shutdown.raise();
    working.await.unwrap();
    app.stop().await;
}

/// Panics on its first attempt at each message, and delivers on the next.
#[derive(Default)]
struct PanicsFirstTime {
    attempts: Mutex<Vec<u32>>,
}

#[async_trait]
impl Handler for PanicsFirstTime {
    async fn handle(&self, _: &herald::domain::Envelope, attempt: u32) -> Outcome {
        self.attempts.lock().unwrap().push(attempt);
        if attempt == 1 {
            panic!("a bug in the handler");
        }
        Outcome::Delivered
    }
}

async fn a_handler_that_panics_has_its_message_retried(kind: BrokerKind) {
    let overrides = [("queues.email.backoff", "[\"300ms\"]")];
    let app = TestApp::spawn(kind, Roles::api_only(), &overrides).await;
    let handler = Arc::new(PanicsFirstTime::default());
    let shutdown = Shutdown::new();
    let pool = app.herald.worker_pool(EventKind::Email, handler.clone());
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));
    let id = send_emails(&app, 1).await.remove(0);
    let status = app
        .notification_when(&id, |s| s["status"] == "delivered")
        .await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(*handler.attempts.lock().unwrap(), [1, 2]);
    let spec = app.herald.topology.queue(EventKind::Email).clone();
    assert_eq!(
        app.herald
            .broker
            .queue_stats(&spec.name)
            .await
            .unwrap()
            .message_count,
        0,
        "settled, not left unacknowledged"
    );
    shutdown.raise();
    working.await.unwrap();
    app.stop().await;
}

async fn an_event_for_an_unknown_tenant_is_rejected_and_nothing_is_sent_or_stored(
    kind: BrokerKind,
) {
    let app = TestApp::spawn(kind, Roles::everything(), &[]).await;
    let herald = &app.herald;
    // Published straight to the exchanges, as another service would, for tenant 999,
    // which does not exist.
    let mut email = email_event();
    email["tenantId"] = serde_json::json!(999);
    let mut audit = audit_event();
    audit["tenantId"] = serde_json::json!(999);
    for (kind, payload) in [(EventKind::Email, &email), (EventKind::Audit, &audit)] {
        let (message, _) = publication(&herald.topology, kind, payload);
        herald.broker.publish(message).await.unwrap();
    }
    for kind in [EventKind::Email, EventKind::Audit] {
        let letters = app.dead_letters(kind, 1).await;
        assert_eq!(letters.len(), 1, "{kind:?} is dead-lettered");
        assert_eq!(letters[0].reason, "rejected");
        assert!(
            letters[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("unknown tenant"),
            "{:?}",
            letters[0]
        );
    }
    let outbox = app.dir.path().join("outbox");
    assert!(
        std::fs::read_dir(&outbox).map_or(true, |mut d| d.next().is_none()),
        "no email was sent"
    );
    let unknown = herald::domain::TenantId::parse("999").unwrap();
    let store = &herald.store;
    assert!(
        store.audit_chain(&unknown, 0, 10).await.unwrap().is_empty(),
        "no audit chain was started for it"
    );

    // A known tenant's message that is not a valid event is rejected too, and its
    // publisher finds it, with why, under the message_id it gave (so built by hand: it is
    // no envelope, and its id is the publisher's own).
    let spec = herald.topology.queue(EventKind::Email);
    herald
        .broker
        .publish(herald::broker::Publication {
            exchange: spec.exchange.clone(),
            routing_key: "email.send".into(),
            message_id: "order-42".into(),
            body: serde_json::to_vec(&serde_json::json!({"payload": {"tenantId": 1, "to": []}}))
                .unwrap()
                .into(),
        })
        .await
        .unwrap();
    let status = app
        .notification_when("order-42", |s| s["status"] == "rejected")
        .await;
    assert_eq!(status["status"], "rejected", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("to"),
        "the reason names what is wrong: {status}"
    );
    app.stop().await;
}

async fn dead_letters_past_their_bounds_are_dropped_logged_and_counted(kind: BrokerKind) {
    let overrides = [
        ("dead_letters.max_length", "2"),
        ("dead_letters.max_age", "3s"),
        ("dead_letters.every", "200ms"),
    ];
    let app = TestApp::spawn(kind, Roles::api_only(), &overrides).await;
    let shutdown = Shutdown::new();
    let pool = app
        .herald
        .worker_pool(EventKind::Email, Arc::new(AlwaysRefused));
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));
    let ids = send_emails(&app, 5).await;
    let spec = app.herald.topology.queue(EventKind::Email).clone();
    let dead = || async {
        app.herald
            .broker
            .queue_stats(&spec.dead_letter_queue())
            .await
            .unwrap()
            .message_count
    };
    let metric = |bound: &str| {
        let line = format!(
            "herald_dead_letters_dropped_total{{queue=\"email.notifications\",bound=\"{bound}\"}} "
        );
        let text = app.herald.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(&line).map(|n| n.parse::<u64>().unwrap()))
            .unwrap_or(0)
    };
    // Five failed; the queue keeps two, the newest, and counts the three it dropped.
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric("length") == 3 && dead().await == 2
        })
        .await,
        "dropped by length: {}, left: {}",
        metric("length"),
        dead().await
    );
    let kept: Vec<String> = app
        .herald
        .broker
        .dead_letters(&spec, 10)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| l.message_id)
        .collect();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|id| ids.contains(id)), "{kept:?}");
    // Past their age, the last two go as well.
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric("age") == 2 && dead().await == 0
        })
        .await,
        "dropped by age: {}",
        metric("age")
    );
    shutdown.raise();
    working.await.unwrap();
    app.stop().await;
}
