//! Audit persistence: the audit worker stores events, tenants query them (filtered,
//! paginated, newest first, isolated), and a record changed in the database breaks the
//! verified chain.

use crate::support::{self, TestApp, eventually};
use herald::app::Roles;
use herald::config::BrokerKind;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::seeds::audit_event;

async fn get(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Sends six audit events through the worker and waits until all are stored.
async fn six_events(app: &TestApp) {
    for (i, (event_type, user)) in [
        ("USER_CREATED", "alice"),
        ("USER_UPDATED", "alice"),
        ("USER_UPDATED", "bob"),
        ("ORDER_PLACED", "bob"),
        ("USER_DELETED", "carol"),
        ("USER_UPDATED", "carol"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut event = audit_event();
        event["eventType"] = json!(event_type);
        event["userId"] = json!(user);
        event["entityId"] = json!(format!("entity-{}", i % 2));
        event["timestamp"] = json!(format!("2026-01-0{}T12:00:00Z", i + 1));
        assert_eq!(
            app.post_json("/v1/audit/events", &event).await.status(),
            StatusCode::ACCEPTED
        );
        // "Newest first" is the order records were stored in, which concurrent workers
        // may make differ from the order of sending: each is stored before the next is
        // sent, so that the two orders are one.
        let stored = eventually(Duration::from_secs(10), || async {
            get(app, &app.key, "/v1/audit/events").await.1["items"]
                .as_array()
                .is_some_and(|items| items.len() == i + 1)
        })
        .await;
        assert!(stored, "the audit worker stored event {i}");
    }
}

fn field<'a>(page: &'a Value, name: &str) -> Vec<&'a str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[name].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_stored_and_queried_newest_first_with_filters_and_cursors() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    six_events(&app).await;
    let key = app.key.clone();
    let (_, all) = get(&app, &key, "/v1/audit/events").await;
    assert_eq!(
        field(&all, "eventType"),
        [
            "USER_UPDATED",
            "USER_DELETED",
            "ORDER_PLACED",
            "USER_UPDATED",
            "USER_UPDATED",
            "USER_CREATED"
        ]
    );
    assert_eq!(all["items"][0]["changes"]["email"], "new@example.com");
    assert!(all["nextCursor"].is_null());

    let (_, updated) = get(&app, &key, "/v1/audit/events?eventType=USER_UPDATED").await;
    assert_eq!(field(&updated, "userId"), ["carol", "bob", "alice"]);
    let (_, bob) = get(&app, &key, "/v1/audit/events?userId=bob").await;
    assert_eq!(field(&bob, "eventType"), ["ORDER_PLACED", "USER_UPDATED"]);
    let (_, entity) = get(
        &app,
        &key,
        "/v1/audit/events?entityType=User&entityId=entity-1",
    )
    .await;
    assert_eq!(field(&entity, "userId"), ["carol", "bob", "alice"]);
    let (_, window) = get(
        &app,
        &key,
        "/v1/audit/events?from=2026-01-02T00:00:00Z&to=2026-01-04T00:00:00Z",
    )
    .await;
    assert_eq!(field(&window, "userId"), ["bob", "alice"]);

    let mut seen = Vec::new();
    let mut path = "/v1/audit/events?limit=4".to_owned();
    loop {
        let (_, page) = get(&app, &key, &path).await;
        seen.extend(field(&page, "id").into_iter().map(str::to_owned));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/v1/audit/events?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        field(&all, "id"),
        "the pages together are the whole list, once each"
    );

    let (status, error) = get(&app, &key, "/v1/audit/events?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["details"][0]["field"], "limit");
    let (status, _) = get(&app, &key, "/v1/audit/events?from=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Another tenant sees none of it.
    let other = support::tenant_key(&app.herald, "2").await;
    let (status, theirs) = get(&app, &other, "/v1/audit/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0);
    assert!(!theirs.to_string().contains("alice"));
    let (_, verified) = get(&app, &other, "/v1/audit/verify").await;
    assert_eq!(verified["records"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_in_the_database_breaks_the_verified_chain() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    six_events(&app).await;
    let (_, verified) = get(&app, &app.key, "/v1/audit/verify").await;
    assert_eq!(
        verified,
        json!({"intact": true, "records": 6, "brokenAt": null, "reason": null})
    );

    let database = app.dir.path().join("herald.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE audit_records SET changes = '{\"email\":\"someone-else@example.com\"}' WHERE seq = 4")
        .execute(&pool)
        .await
        .unwrap();
    let (_, verified) = get(&app, &app.key, "/v1/audit/verify").await;
    assert_eq!(verified["intact"], false);
    assert_eq!(verified["brokenAt"], 4);
    assert_eq!(verified["records"], 3);

    sqlx::query("DELETE FROM audit_records WHERE seq = 4")
        .execute(&pool)
        .await
        .unwrap();
    let (_, verified) = get(&app, &app.key, "/v1/audit/verify").await;
    assert_eq!(
        verified["intact"], false,
        "a removed record breaks the chain too"
    );
    assert_eq!(verified["brokenAt"], 5);
    app.stop().await;
}

/// An audit event's status comes from its stored record: delivered once the worker has
/// appended it, whether it came over HTTP or straight to the exchange, and only for its
/// own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_event_is_delivered_once_its_record_is_stored() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let accepted: Value = app
        .post_json("/v1/audit/events", &audit_event())
        .await
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap();
    let status = app
        .notification_when(id, |s| s["status"] == "delivered")
        .await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["kind"], "audit");
    let deliveries = status["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{status}");
    assert_eq!(deliveries[0]["channel"], "audit");
    assert_eq!(deliveries[0]["recipient"], "user_456");
    assert_eq!(deliveries[0]["attempts"], 1);

    // Published to the exchange directly: the ledger never saw it accepted.
    let (publication, direct) = support::publication(
        &app.herald.topology,
        herald::domain::EventKind::Audit,
        &audit_event(),
    );
    app.herald.broker.publish(publication).await.unwrap();
    let direct = direct.to_string();
    let status = app
        .notification_when(&direct, |s| s["status"] == "delivered")
        .await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["id"], direct.as_str());

    let other = support::tenant_key(&app.herald, "2").await;
    let (code, theirs) = get(&app, &other, &format!("/v1/notifications/{id}")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(!theirs.to_string().contains("user_456"));
    app.stop().await;
}
