//! The delivery ledger: a send's Location answers its status per recipient, for its own
//! tenant only.

mod common;

use common::{TestApp, email_event, eventually};
use herald::app::Roles;
use herald::config::BrokerKind;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sends_location_answers_its_status_per_recipient() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[])
        .await
        .unwrap();
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
    let other_key = common::tenant_key(&app.herald, "2").await;
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
