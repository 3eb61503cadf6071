//! RabbitMQ-only behaviour: events published straight to the exchanges by other services,
//! quorum queues, and retries while a work queue is full. Faults of RabbitMQ itself (a
//! restart, an alarm, a broker down at start) are in `rabbitmq_node.rs`.

use crate::support::{self, TestApp};
use async_trait::async_trait;
use herald::app::Roles;
use herald::config::BrokerKind;
use herald::domain::{Envelope, Event, EventKind};
use herald::shutdown::Shutdown;
use herald::workers::{Handler, Outcome};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use testkit::seeds::{audit_event, push_event};
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
#[ignore = "needs RabbitMQ on 127.0.0.1:5672 (HERALD_TEST_RABBITMQ_URL); cargo nextest run --run-ignored all runs it"]
async fn a_payload_published_with_a_plain_amqp_client_reaches_the_push_handler() {
    let app = TestApp::spawn(BrokerKind::Rabbitmq, Roles::api_only(), &[]).await;
    // The envelope below names tenant 7, which must exist for its event to be handled.
    support::tenant_key(&app.herald, "7").await;
    let (seen, mut received) = mpsc::unbounded_channel();
    let shutdown = Shutdown::new();
    let pool = app
        .herald
        .worker_pool(EventKind::Push, Arc::new(Recording(seen)));
    let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(5)));

    // What a Node.js service on the seeds' code publishes: only the payload, tenantId
    // inside it, to the `notifications` exchange with routing key `push.mobile`.
    let connection = Connection::connect(&support::rabbitmq_url(), Default::default())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ on 127.0.0.1:5672 (HERALD_TEST_RABBITMQ_URL); cargo nextest run --run-ignored all runs it"]
async fn quorum_queues_take_and_deliver_events() {
    let overrides = [("broker.rabbitmq.quorum_queues", "true")];
    let app = TestApp::spawn(BrokerKind::Rabbitmq, Roles::api_only(), &overrides).await;
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

/// Seconds since the epoch, as the SMTP relay stamps what it receives.
fn epoch_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Emails that meet a 451 while other sends keep their queue full all come back within
/// their backoff, and every email accepted is delivered: a retry does not go back through
/// the full work queue (which, on classic queues, dropped it: RabbitMQ dead-letters at
/// most once), nor wait on RabbitMQ's dead-letter publisher (which, on quorum queues,
/// waited minutes for the full queue).
async fn retries_come_back_within_their_backoff_while_the_queue_is_full(quorum: bool) {
    let Some(relay) = support::smtp_relay::SmtpRelay::start() else {
        return;
    };
    let mut overrides = relay.overrides();
    overrides.extend([
        ("queues.email.max_length", "20"),
        ("queues.email.concurrency", "2"),
        ("queues.email.backoff", "[\"1s\"]"),
        ("email.pool_size", "2"),
        (
            "broker.rabbitmq.quorum_queues",
            if quorum { "true" } else { "false" },
        ),
    ]);
    let app = TestApp::spawn(BrokerKind::Rabbitmq, Roles::everything(), &overrides).await;
    let app = Arc::new(app);
    let email =
        |to: &str| serde_json::json!({"to": [to], "template": "welcome", "data": {"name": "Ada"}});
    // Four senders keep the email queue full for five seconds.
    let filling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut fillers = Vec::new();
    for sender in 0..4 {
        let (app, filling) = (app.clone(), filling.clone());
        fillers.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), 0);
            let mut n = 0;
            while filling.load(std::sync::atomic::Ordering::Relaxed) {
                let to = format!("filler-{sender}-{n}@example.com");
                let response = app.post_json("/v1/notifications/email", &email(&to)).await;
                match response.status().as_u16() {
                    202 => accepted.push(to),
                    503 => refused += 1,
                    other => panic!("a send was answered {other}"),
                }
                n += 1;
            }
            (accepted, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Each of these is refused with 451 the first time, then accepted.
    let mut busy = Vec::new();
    for i in 0..5 {
        let to = format!("busy-{i}@example.com");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let response = app.post_json("/v1/notifications/email", &email(&to)).await;
            if response.status() == 202 {
                busy.push((to, epoch_seconds()));
                break;
            }
            assert_eq!(response.status(), 503);
            assert!(
                std::time::Instant::now() < deadline,
                "{to} was never accepted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    filling.store(false, std::sync::atomic::Ordering::Relaxed);
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for filler in fillers {
        let (to, n) = filler.await.unwrap();
        accepted.extend(to);
        refused += n;
    }
    assert!(
        refused > 0,
        "the queue was full: sends were refused with 503"
    );
    accepted.extend(busy.iter().map(|(to, _)| to.clone()));

    let received = relay.wait_for(accepted.len()).await;
    let mut by_recipient: HashMap<String, Vec<f64>> = HashMap::new();
    for message in &received {
        let to = message["rcptTos"][0].as_str().unwrap().to_owned();
        let at = message["receivedAt"].as_f64().unwrap();
        by_recipient.entry(to).or_default().push(at);
    }
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|to| !by_recipient.contains_key(*to))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted emails never arrived: {missing:?}",
        missing.len(),
        accepted.len()
    );
    for (to, accepted_at) in &busy {
        let took = by_recipient[to][0] - accepted_at;
        assert!(
            took < 1.0 + 3.0,
            "{to} arrived {took:.1} s after it was accepted, its backoff being 1 s"
        );
    }
    let duplicates = received.len() - by_recipient.len();
    assert_eq!(duplicates, 0, "no email was sent twice");
    eprintln!(
        "{} accepted ({} refused while full), every one delivered; retries within their backoff",
        accepted.len(),
        refused
    );
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ on 127.0.0.1:5672 (HERALD_TEST_RABBITMQ_URL); cargo nextest run --run-ignored all runs it"]
async fn retries_come_back_within_their_backoff_while_a_classic_queue_is_full() {
    retries_come_back_within_their_backoff_while_the_queue_is_full(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ on 127.0.0.1:5672 (HERALD_TEST_RABBITMQ_URL); cargo nextest run --run-ignored all runs it"]
async fn retries_come_back_within_their_backoff_while_a_quorum_queue_is_full() {
    retries_come_back_within_their_backoff_while_the_queue_is_full(true).await;
}
