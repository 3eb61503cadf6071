//! The HTTP contract on the embedded broker: a first email reaches the outbox, and bad
//! input of every kind gets its contract error, never a 5xx.

use crate::support::{TestApp, eventually};
use herald::app::Roles;
use herald::config::BrokerKind;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::seeds::{audit_event, email_event, push_event};

async fn app() -> TestApp {
    TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await
}

/// The `field` of each entry of an error's details.
fn invalid_fields(error: &Value) -> Vec<&str> {
    error["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect()
}

/// Asserts the contract's error shape and code, and returns the body.
async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("errors are JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(body["error"]["details"].is_array());
    body
}

#[tokio::test]
async fn a_posted_email_is_accepted_and_lands_in_the_outbox() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let response = app
        .post_json("/v1/notifications/email", &email_event())
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(
        location,
        format!("/v1/notifications/{}", body["id"].as_str().unwrap())
    );

    let outbox = app.dir.path().join("outbox");
    let arrived = eventually(Duration::from_secs(10), || {
        let outbox = outbox.clone();
        async move { std::fs::read_dir(&outbox).is_ok_and(|mut d| d.next().is_some()) }
    })
    .await;
    assert!(arrived, "no .eml file appeared in the outbox");
    let file = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let eml = std::fs::read_to_string(file).unwrap();
    assert!(eml.contains("To: ada@example.com"), "{eml}");
    assert!(eml.contains("Subject: Welcome, Ada!"), "{eml}");
    assert!(eml.contains(&format!(
        "Message-ID: <{}.0@herald.localhost>",
        body["id"].as_str().unwrap()
    )));
    app.stop().await;
}

#[tokio::test]
async fn every_send_endpoint_accepts_the_seed_payloads() {
    let app = app().await;
    let chat = json!({
        "messageId": "msg_123", "conversationId": "conv_456", "senderId": "user_789",
        "recipientIds": ["user_1"], "tenantId": 1, "content": "Hello world!",
        "messageType": "text", "timestamp": "2026-01-31T12:00:00Z"
    });
    for (path, body) in [
        ("/v1/chat/messages", chat),
        ("/v1/notifications/push", push_event()),
        ("/v1/notifications/email", email_event()),
        ("/v1/audit/events", audit_event()),
    ] {
        let response = app.post_json(path, &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{path}");
    }
    for queue in [
        "chat.messages",
        "push.notifications",
        "email.notifications",
        "audit.events",
    ] {
        let spec = app.herald.topology.queue_named(queue).unwrap();
        let stats = app.herald.broker.queue_stats(&spec.name).await.unwrap();
        assert_eq!(stats.message_count, 1, "{queue}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_batch_is_validated_whole_before_anything_is_queued() {
    let app = app().await;
    let mut bad_push = push_event();
    bad_push["kind"] = json!("push");
    bad_push["recipientIds"] = json!([]);
    let mut email = email_event();
    email["kind"] = json!("email");
    let response = app
        .post_json(
            "/v1/batch",
            &json!({"events": [email.clone(), bad_push, {"kind": "fax"}]}),
        )
        .await;
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields = invalid_fields(&body);
    assert_eq!(fields, ["events[1].recipientIds", "events[2].kind"]);
    let email_queue = &app
        .herald
        .topology
        .queue_named("email.notifications")
        .unwrap()
        .name;
    assert_eq!(
        app.herald
            .broker
            .queue_stats(email_queue)
            .await
            .unwrap()
            .message_count,
        0
    );

    let mut audit = audit_event();
    audit["kind"] = json!("audit");
    let response = app
        .post_json("/v1/batch", &json!({"events": [email, audit]}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r["status"] == "queued" && r["id"].is_string())
    );
    assert_eq!(
        app.herald
            .broker
            .queue_stats(email_queue)
            .await
            .unwrap()
            .message_count,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = app().await;
    let response = app
        .post_raw(
            "/v1/notifications/push",
            Some("application/json"),
            "{\"tenantId\": 1, \"title\": ".into(),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "malformed_json").await;
    app.stop().await;
}

#[tokio::test]
async fn wrong_types_and_missing_fields_are_422_naming_each_field() {
    let app = app().await;
    let body = json!({"tenantId": true, "recipientIds": "user_1", "title": 5, "platform": "fax"});
    let response = app.post_json("/v1/notifications/push", &body).await;
    let error = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields = invalid_fields(&error);
    assert_eq!(
        fields,
        ["tenantId", "recipientIds", "title", "body", "platform"]
    );

    let response = app.post_json("/v1/audit/events", &json!([1, 2, 3])).await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_10_mb_body_is_413() {
    let app = app().await;
    let huge = format!(
        "{{\"tenantId\": 1, \"title\": \"{}\"}}",
        "x".repeat(10 * 1024 * 1024)
    );
    let response = app
        .post_raw("/v1/notifications/push", Some("application/json"), huge)
        .await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = app().await;
    let response = app
        .post_raw(
            "/v1/notifications/email",
            Some("text/plain"),
            "hello".into(),
        )
        .await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let response = app
        .post_raw("/v1/notifications/email", None, "{}".into())
        .await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = app().await;
    let response = app.get("/v1/nothing/here").await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app.get("/v1/chat/messages").await;
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = app().await;
    let get = |path: &'static str| app.client.get(format!("{}{path}", app.address)).send();
    assert_eq!(get("/health").await.unwrap().status(), StatusCode::OK);
    let ready: Value = get("/health/ready").await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["broker"]["broker"], "embedded");
    let openapi: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    for path in [
        "/v1/chat/messages",
        "/v1/notifications/push",
        "/v1/notifications/email",
        "/v1/audit/events",
        "/v1/batch",
    ] {
        assert!(
            openapi["paths"][path]["post"].is_object(),
            "{path} is documented"
        );
    }
    assert!(
        get("/docs")
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("/openapi.json")
    );
    app.post_json("/v1/audit/events", &audit_event()).await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "herald_queue_publishes_total{queue=\"audit.events\",outcome=\"confirmed\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("herald_http_requests_total"));
    app.stop().await;
}

/// Invented methods and paths do not make new metric series: each folds into one value.
#[tokio::test]
async fn metric_labels_stay_bounded_whatever_clients_send() {
    let app = app().await;
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        app.client
            .request(method, format!("{}/v1/chat/messages", app.address))
            .send()
            .await
            .unwrap();
        app.get(&format!("/no/such/path/{i}")).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("INVENTED"), "{metrics}");
    assert!(!metrics.contains("/no/such/path"), "{metrics}");
    let series = |needle: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("herald_http_requests_total{") && l.contains(needle))
            .count()
    };
    assert_eq!(series("method=\"other\""), 1, "{metrics}");
    assert_eq!(series("route=\"unmatched\""), 1, "{metrics}");
    app.stop().await;
}

/// A batch larger than the tenant's burst could never pass: 422 naming the limit, not a
/// 429 that waiting would not cure.
#[tokio::test]
async fn a_batch_over_the_burst_is_422_naming_it() {
    let app = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::api_only(),
        &[("rate_limits.per_second", "2"), ("rate_limits.burst", "3")],
    )
    .await;
    let mut email = email_event();
    email["kind"] = json!("email");
    let events = vec![email; 4];
    let response = app
        .post_json("/v1/batch", &json!({ "events": events }))
        .await;
    let body = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let message = body["error"]["details"][0]["message"].as_str().unwrap();
    assert!(message.contains("burst of 3"), "{message}");
    let response = app
        .post_json("/v1/batch", &json!({ "events": events[..3] }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "within the burst");
    app.stop().await;
}

/// `/docs` loads nothing from elsewhere: its script is Herald's own.
#[tokio::test]
async fn the_docs_page_is_served_whole_by_herald() {
    let app = app().await;
    let page = app.get("/docs").await.text().await.unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let script = page
        .split("<script src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads a script");
    let response = app.get(script).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let body = response.text().await.unwrap();
    assert!(
        body.len() > 100_000 && body.contains("Redoc"),
        "Redoc's bundle"
    );
    app.stop().await;
}

/// A provider setting that does not parse is 422 naming the field, as the API spells it;
/// a whole number written with a point is a whole number, there as in events.
#[tokio::test]
async fn provider_errors_name_their_field_and_a_whole_number_may_have_a_point() {
    let app = app().await;
    let put = |provider: &str, settings: Value| {
        let app = &app;
        let path = format!("/v1/providers/{provider}");
        async move { app.call(reqwest::Method::PUT, &path, Some(&settings)).await }
    };
    let (status, body) = put("smtp", json!({"host": "relay.invalid", "port": "587"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(invalid_fields(&body), ["port"]);
    let (status, body) = put(
        "fcm",
        json!({"client_email": "a@b.example", "private_key": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(invalid_fields(&body), ["project_id"]);

    let (status, body) = put("smtp", json!({"host": "relay.invalid", "port": 2525.0})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["port"], 2525);
    let mut push = push_event();
    push["tenantId"] = json!(1.0);
    push["badge"] = json!(3.0);
    let response = app.post_json("/v1/notifications/push", &push).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    app.stop().await;
}
