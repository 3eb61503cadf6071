//! The delivery ledger: a send's Location answers its status per recipient, for its own
//! tenant only.

use crate::support::{self, TestApp, eventually};
use herald::app::{Herald, Roles};
use herald::config::BrokerKind;
use herald::shutdown::Shutdown;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use testkit::seeds::email_event;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sends_location_answers_its_status_per_recipient() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let mut event = email_event();
    event["to"] = serde_json::json!(["ada@example.com", "bob@example.com"]);
    let response = app.post_json("/v1/notifications/email", &event).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let get = |key: String| {
        let (client, url) = (app.client.clone(), format!("{}{location}", app.address));
        async move { client.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let delivered = eventually(Duration::from_secs(10), || async {
        let body: Value = get(app.key.clone()).await.json().await.unwrap();
        body["status"] == "delivered"
    })
    .await;
    assert!(delivered, "the ledger records the delivery");
    let status: Value = get(app.key.clone()).await.json().await.unwrap();
    assert_eq!(status["kind"], "email");
    assert!(status["createdAt"].is_string());
    let deliveries = status["deliveries"].as_array().unwrap();
    let recipients: Vec<&str> = deliveries
        .iter()
        .map(|d| d["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(recipients, ["ada@example.com", "bob@example.com"]);
    for delivery in deliveries {
        assert_eq!(delivery["channel"], "email");
        assert_eq!(delivery["status"], "delivered");
        assert_eq!(delivery["attempts"], 1);
        assert!(delivery["lastError"].is_null());
        assert!(delivery["updatedAt"].is_string());
    }

    // Another tenant's key sees nothing of it: 404, and no trace of its data.
    let other_key = support::tenant_key(&app.herald, "2").await;
    let response = get(other_key).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.text().await.unwrap();
    assert!(
        !body.contains("ada@example.com") && !body.contains("email\""),
        "{body}"
    );
    let unknown = app
        .client
        .get(format!(
            "{}/v1/notifications/0190d8c4-7c8e-7000-8000-000000000001",
            app.address
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

/// A client following a 202's `Location` gets the event's status at once, from another
/// instance sharing the store: the acceptance is written before the 202 is answered.
async fn a_location_answers_at_once_from_another_instance(broker: BrokerKind) {
    if broker == BrokerKind::Rabbitmq {
        support::require_rabbitmq();
    }
    let database = support::fresh_postgres_database().await;
    let prefix = support::unique_prefix();
    let shutdown = Shutdown::new();
    let mut instances = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::TempDir::new().unwrap();
        let overrides = [("database.url", database.as_str())];
        let settings = support::settings(broker, dir.path(), &prefix, &overrides);
        let herald = Herald::start(settings).await.unwrap();
        let (address, _) = support::serve(&herald, Roles::api_only(), &shutdown).await;
        instances.push((herald, address));
        dirs.push(dir);
    }
    let key = support::tenant_key(&instances[0].0, "1").await;
    let (sending, reading) = (&instances[0].1, &instances[1].1);
    let client = support::http_client();
    let status_of = |id: String| {
        let (client, key) = (client.clone(), key.clone());
        let url = format!("{reading}/v1/notifications/{id}");
        async move {
            let response = client.get(url).bearer_auth(key).send().await.unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for _ in 0..50 {
        let response = client
            .post(format!("{sending}/v1/notifications/email"))
            .bearer_auth(&key)
            .json(&email_event())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let id = location.rsplit('/').next().unwrap().to_owned();
        let (status, body) = status_of(id).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{location} right after its 202: {body}"
        );
        assert_eq!(body["status"], "queued", "{body}");
        assert_eq!(body["deliveries"][0]["status"], "queued", "{body}");
    }
    let batch = serde_json::json!({"events": (0..20).map(|_| {
        let mut event = email_event();
        event["kind"] = "email".into();
        event
    }).collect::<Vec<_>>()});
    for _ in 0..5 {
        let response = client
            .post(format!("{sending}/v1/batch"))
            .bearer_auth(&key)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        for result in body["results"].as_array().unwrap() {
            let (status, body) = status_of(result["id"].as_str().unwrap().to_owned()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "a batch's event right after its 202"
            );
            assert_eq!(body["status"], "queued");
        }
    }
    shutdown.raise();
    if broker == BrokerKind::Rabbitmq {
        support::delete_rabbitmq_topology(&instances[0].0.topology).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL on 127.0.0.1:5432 (HERALD_TEST_POSTGRES_URL); cargo nextest run --run-ignored all runs it"]
async fn a_location_answers_at_once_from_another_instance_on_the_embedded_broker() {
    a_location_answers_at_once_from_another_instance(BrokerKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 (HERALD_TEST_RABBITMQ_URL, HERALD_TEST_POSTGRES_URL); cargo nextest run --run-ignored all runs it"]
async fn a_location_answers_at_once_from_another_instance_on_rabbitmq() {
    a_location_answers_at_once_from_another_instance(BrokerKind::Rabbitmq).await;
}
