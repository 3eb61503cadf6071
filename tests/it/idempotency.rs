//! Idempotency: a repeated send answers the same and queues nothing, also under
//! concurrency and across instances sharing PostgreSQL.

use crate::support::{self, TestApp};
use herald::app::{Herald, Roles};
use herald::config::BrokerKind;
use herald::domain::EventKind;
use herald::shutdown::Shutdown;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::seeds::{audit_event, email_event};

async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    idempotency_key: &str,
    body: &Value,
) -> (StatusCode, String) {
    let response = client
        .post(url)
        .bearer_auth(key)
        .header("idempotency-key", idempotency_key)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn queued(herald: &Herald, kind: EventKind) -> u64 {
    let spec = herald.topology.queue(kind);
    herald
        .broker
        .queue_stats(&spec.name)
        .await
        .unwrap()
        .message_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_sends_with_one_key_queue_one_event_and_answer_alike() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let url = format!("{}/v1/audit/events", app.address);
    let event = audit_event();
    let sends = (0..20).map(|_| send(&app.client, &url, &app.key, "order-42", &event));
    let answers = futures_util::future::join_all(sends).await;
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    let first = &answers[0].1;
    assert!(
        answers.iter().all(|(_, body)| body == first),
        "one 202 body, repeated"
    );
    assert_eq!(
        queued(&app.herald, EventKind::Audit).await,
        1,
        "one event queued"
    );

    let mut other = audit_event();
    other["entityId"] = json!("someone-else");
    let (status, body) = send(&app.client, &url, &app.key, "order-42", &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("Idempotency-Key"));
    assert_eq!(queued(&app.herald, EventKind::Audit).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_chat_message_id_is_its_idempotency_key() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let message = json!({
        "messageId": "msg_123", "conversationId": "conv_456", "senderId": "user_789",
        "recipientIds": ["user_1"], "content": "Hello world!", "messageType": "text",
        "timestamp": "2026-01-31T12:00:00Z"
    });
    let first = app.post_json("/v1/chat/messages", &message).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();
    let again = app.post_json("/v1/chat/messages", &message).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(
        again.headers()["location"],
        location,
        "a repeat points at the same event"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(queued(&app.herald, EventKind::Chat).await, 1);
    let other = app
        .post_json("/v1/notifications/email", &email_event())
        .await;
    assert_eq!(
        other.status(),
        StatusCode::ACCEPTED,
        "keys do not leak across sends without one"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL on 127.0.0.1:5432 (HERALD_TEST_POSTGRES_URL); cargo nextest run --run-ignored all runs it"]
async fn one_key_holds_across_instances_sharing_postgres() {
    let database = support::fresh_postgres_database().await;
    let shutdown = Shutdown::new();
    let mut instances = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::TempDir::new().unwrap();
        let settings = support::settings(
            BrokerKind::Embedded,
            dir.path(),
            "",
            &[("database.url", database.as_str())],
        );
        let herald = Herald::start(settings).await.unwrap();
        let (address, _) = support::serve(&herald, Roles::api_only(), &shutdown).await;
        instances.push((herald, address));
        dirs.push(dir);
    }
    let key = support::tenant_key(&instances[0].0, "1").await;
    let client = support::http_client();
    let sends = (0..20).map(|i| {
        let url = format!("{}/v1/audit/events", instances[i % 2].1);
        let (client, key) = (client.clone(), key.clone());
        async move { send(&client, &url, &key, "shared-key", &audit_event()).await }
    });
    let answers = futures_util::future::join_all(sends).await;
    assert!(
        answers
            .iter()
            .all(|(status, body)| *status == StatusCode::ACCEPTED && *body == answers[0].1)
    );
    let total = queued(&instances[0].0, EventKind::Audit).await
        + queued(&instances[1].0, EventKind::Audit).await;
    assert_eq!(total, 1, "one event queued across both instances");
    shutdown.raise();
}
