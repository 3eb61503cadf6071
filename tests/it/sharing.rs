//! The services Herald replaces keep running beside it on one RabbitMQ, unchanged: their
//! own declarations succeed on Herald's topology, Herald takes over queues they filled,
//! a changed length applies without deleting a queue, a key nothing is bound for is kept,
//! each routing key means what the seeds mean, and every shape they publish is delivered.
//!
//! The seeds' side is their own client library (amqplib, driven by tests/seeds/seed001.mjs,
//! which follows seed 001's message-queue service). Each test has a virtual host of its
//! own, so that the seeds' queue names are used as they are.

use crate::support::seeds::{Vhost, seed_clients, seed001};
use crate::support::{self, TestApp, socket};
use herald::app::Roles;
use herald::config::BrokerKind;
use herald::domain::EventKind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN_TOKEN: &str = "an-admin-token-for-tests";

/// Herald on `vhost` under no prefix (the seeds' own names), with `overrides`.
pub(crate) async fn herald_on(vhost: &Vhost, roles: Roles, overrides: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::TempDir::new().unwrap();
    let url = vhost.url();
    let mut all = vec![
        ("broker.rabbitmq.url", url.as_str()),
        ("admin.token", ADMIN_TOKEN),
    ];
    all.extend_from_slice(overrides);
    let settings = support::settings(BrokerKind::Rabbitmq, dir.path(), "", &all);
    TestApp::start(dir, settings, roles).await
}

/// The results of seed 001's steps, each `ok`.
fn all_ok(count: usize) -> Vec<Value> {
    (0..count).map(|i| json!({"step": i, "ok": true})).collect()
}

/// Seed 001's audit event, as its guide's `sendAuditEvent` example writes it.
fn audit(entity: &str) -> Value {
    json!({"eventType": "USER_UPDATED", "userId": "user_123", "tenantId": 1,
           "entityType": "User", "entityId": entity, "changes": {"email": "new@example.com"},
           "timestamp": "2026-01-31T12:00:00.000Z"})
}

/// The tenant's audit records of `entity`, once there are `count` (or after 20 s).
async fn audit_records(app: &TestApp, entity: &str, count: usize) -> Vec<Value> {
    let path = format!("/v1/audit/events?entityId={entity}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = app.call(Method::GET, &path, None).await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= count || tokio::time::Instant::now() >= deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn the_seeds_own_declarations_succeed_on_the_topology_herald_declared() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    let app = herald_on(&vhost, Roles::everything(), &[]).await;
    // Seed 001 starts after Herald: its assertExchange, assertQueue (TTL and max length
    // of its table) and bindQueue calls, then its sendAuditEvent.
    let steps = json!([
        {"setup": {}},
        {"send": {"exchange": "audit", "routingKey": "audit.track", "type": "audit_event",
                  "payload": audit("declared")}},
    ]);
    assert_eq!(seed001(&seeds, &vhost.url(), &steps), all_ok(2));
    assert_eq!(audit_records(&app, "declared", 1).await.len(), 1);
    // What Herald needs besides is in its policy, not in the declaration.
    let queue = vhost
        .queue_when("chat.messages", |q| q["policy"] == "herald.chat.messages")
        .await;
    assert_eq!(queue["policy"], "herald.chat.messages", "{queue}");
    assert_eq!(
        queue["effective_policy_definition"]["overflow"],
        "reject-publish"
    );
    let (_, ready) = app.call(Method::GET, "/health/ready", None).await;
    assert_eq!(
        ready["broker"]["detail"],
        format!(
            "connected to amqp://guest:***@127.0.0.1:5672/{}",
            vhost.name
        ),
        "no gap: {ready}"
    );
    app.stop().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn herald_takes_over_the_seeds_queues_with_their_messages_and_names_what_they_lack() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    // Before Herald: the service has declared its queues, each with a dead-letter
    // exchange of its own, and published two audit events nobody has consumed yet.
    let steps = json!([
        {"setup": {"deadLetterExchange": "dlx"}},
        {"send": {"exchange": "audit", "routingKey": "audit.track", "type": "audit_event",
                  "payload": audit("waiting")}},
        {"send": {"exchange": "audit", "routingKey": "audit.track", "type": "audit_event",
                  "payload": audit("waiting")}},
    ]);
    assert_eq!(seed001(&seeds, &vhost.url(), &steps), all_ok(3));
    let app = herald_on(&vhost, Roles::everything(), &[]).await;
    assert_eq!(
        audit_records(&app, "waiting", 2).await.len(),
        2,
        "both waiting events are stored"
    );
    // The queue is the service's still, with its own arguments.
    let queue = vhost.queue("audit.events").await;
    assert_eq!(
        queue["arguments"]["x-dead-letter-exchange"], "dlx",
        "{queue}"
    );
    let (status, ready) = app.call(Method::GET, "/health/ready", None).await;
    assert_eq!(status, StatusCode::OK, "Herald works without it: {ready}");
    let detail = ready["broker"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("queue audit.events dead-letters its expired messages to exchange 'dlx', not to audit.events.dlq"),
        "{detail}"
    );
    app.stop().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn a_changed_max_length_applies_on_the_next_start_without_deleting_the_queue() {
    let vhost = Vhost::new().await;
    // No workers: what is sent stays in the queue.
    let push = json!({"recipientIds": ["ada"], "title": "Hi", "body": "queued"});
    let first = herald_on(
        &vhost,
        Roles::api_only(),
        &[("queues.push.max_length", "100")],
    )
    .await;
    let (status, body) = first
        .call(Method::POST, "/v1/notifications/push", Some(&push))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    first.stop_and_keep().await;

    let second = herald_on(
        &vhost,
        Roles::api_only(),
        &[("queues.push.max_length", "2")],
    )
    .await;
    let stats = second
        .herald
        .broker
        .queue_stats("push.notifications")
        .await
        .unwrap();
    assert_eq!(
        stats.message_count, 1,
        "the queue was kept, with its message"
    );
    let (status, body) = second
        .call(Method::POST, "/v1/notifications/push", Some(&push))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = second
        .call(Method::POST, "/v1/notifications/push", Some(&push))
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the third is over the new length: {body}"
    );
    let queue = vhost
        .queue_when("push.notifications", |q| {
            q["policy"] == "herald.push.notifications"
        })
        .await;
    assert_eq!(
        queue["effective_policy_definition"]["max-length"], 2,
        "{queue}"
    );
    second.stop().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn a_message_nothing_is_bound_for_is_kept_in_unrouted_and_counted() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    let app = herald_on(&vhost, Roles::everything(), &[]).await;
    let steps = json!([{"publish": {"exchange": "messages", "routingKey": "message.new",
                                    "body": {"hello": "nobody binds this"}}}]);
    assert_eq!(seed001(&seeds, &vhost.url(), &steps), all_ok(1));
    let admin = |path: &str| {
        app.client
            .get(format!("{}{path}", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let queues: Value = admin("/admin/queues").await.unwrap().json().await.unwrap();
    assert_eq!(queues["unrouted"]["messageCount"], 1, "{queues}");
    let metrics = admin("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("herald_unrouted_messages 1"), "{metrics}");
    app.stop().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn each_routing_key_means_what_the_seeds_mean_by_it() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    let app = herald_on(&vhost, Roles::everything(), &[]).await;
    for (platform, token) in [("web", "web-1"), ("ios", "ios-1")] {
        let (status, body) = app
            .call(
                Method::PUT,
                "/v1/users/ada/devices",
                Some(&json!({"platform": platform, "token": token})),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let bob = socket::token(&app, "bob").await;
    let mut bob = socket::open(&app.address, &bob, None).await;
    socket::until_ready(&mut bob).await;

    // Bare payloads that do not repeat what their key says.
    let chat = json!({"messageId": "m-group", "conversationId": "c1", "senderId": "ada",
                      "recipientIds": ["bob"], "tenantId": 1, "content": "Hello group",
                      "messageType": "text", "timestamp": "2026-01-31T12:00:00Z"});
    let mut no_compliance = audit("compliant");
    no_compliance.as_object_mut().unwrap().remove("compliance");
    let steps = json!([
        {"publish": {"exchange": "notifications", "routingKey": "push.web", "messageId": "push-web-1",
                     "body": {"recipientIds": ["ada"], "title": "Hi", "body": "web only", "tenantId": 1}}},
        {"publish": {"exchange": "audit", "routingKey": "audit.compliance", "body": no_compliance}},
        {"publish": {"exchange": "messages", "routingKey": "chat.group", "body": chat}},
        {"publish": {"exchange": "messages", "routingKey": "chat.typing",
                     "body": {"conversationId": "c1", "userId": "ada", "isTyping": true, "tenantId": 1}}},
    ]);
    assert_eq!(seed001(&seeds, &vhost.url(), &steps), all_ok(4));

    // push.web: web devices only.
    let pushed = app
        .notification_when("push-web-1", |s| s["status"] == "delivered")
        .await;
    assert_eq!(pushed["status"], "delivered", "{pushed}");
    let outbox = std::fs::read_to_string(app.dir.path().join("outbox/push.jsonl")).unwrap();
    let tokens: Vec<String> = outbox
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(tokens, ["web-1"]);
    // audit.compliance: a compliance record.
    let records = audit_records(&app, "compliant", 1).await;
    assert_eq!(records[0]["compliance"], true, "{records:?}");
    // chat.group: a group conversation's message.
    let frame = socket::next(&mut bob).await;
    assert_eq!(frame["type"], "message:new", "{frame}");
    assert_eq!(frame["data"]["conversationType"], "group", "{frame}");
    // chat.typing: no handler, dead-lettered saying so.
    let letters = app.dead_letters(EventKind::Chat, 1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].last_error.as_deref(),
        Some("no handler for routing key 'chat.typing'")
    );
    app.stop().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn every_shape_the_seeds_publish_is_delivered_over_amqp_and_http() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    let app = herald_on(&vhost, Roles::everything(), &[]).await;
    for (user, token) in [("user_123", "ios-123"), ("user_456", "ios-456")] {
        let device = json!({"platform": "ios", "token": token});
        let path = format!("/v1/users/{user}/devices");
        let (status, body) = app.call(Method::PUT, &path, Some(&device)).await;
        assert!(status.is_success(), "{body}");
    }
    // The service's own welcome template reads `userName`; moving to Herald, it brings it.
    let welcome = json!({"subject": "Welcome, {{userName}}", "html": "<p>Hello {{userName}}</p>",
                         "sampleData": {"userName": "Ada"}});
    let (status, body) = app
        .call(Method::PUT, "/v1/templates/welcome", Some(&welcome))
        .await;
    assert!(status.is_success(), "{body}");
    // The service stamps its envelope with `new Date()`: now.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let envelope = |id: &str, kind: &str, payload: Value| json!({"id": id, "type": kind, "payload": payload, "timestamp": now});
    // Seed 001's four examples, in its service's envelope; numeric tenantId.
    let push = json!({"recipientIds": ["user_123", "user_456"], "title": "New Message",
                      "body": "You have a new message from John", "data": {"conversationId": "conv_789"},
                      "tenantId": 1});
    let email = json!({"to": ["user@example.com"], "subject": "Welcome to mono Platform",
                       "template": "welcome", "data": {"userName": "John Doe"}, "tenantId": 1});
    let chat = json!({"messageId": "msg_123", "conversationId": "conv_456", "senderId": "user_789",
                      "tenantId": 1, "content": "Hello world!", "messageType": "text",
                      "timestamp": now});
    let conversation = json!({"type": "group", "members": ["user_789", "user_1"]});
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/conversations/conv_456",
            Some(&conversation),
        )
        .await;
    assert!(status.is_success(), "{body}");
    // The bare payload, string tenantId, the timestamp in epoch milliseconds (Date.now()).
    let mut bare_audit = audit("shapes");
    bare_audit["tenantId"] = json!("1");
    bare_audit["timestamp"] = json!(1_769_860_800_000_u64);
    let shapes = [
        (
            "notifications",
            "push.mobile",
            "seed-push",
            envelope("seed-push", "push_notification", push.clone()),
        ),
        (
            "notifications",
            "email.template",
            "seed-email",
            envelope("seed-email", "email_notification", email.clone()),
        ),
        (
            "messages",
            "chat.direct",
            "seed-chat",
            envelope("seed-chat", "chat_message", chat),
        ),
        (
            "audit",
            "audit.track",
            "seed-audit",
            envelope("seed-audit", "audit_event", audit("shapes")),
        ),
        ("audit", "audit.track", "bare-audit", bare_audit),
    ];
    let steps: Vec<Value> = shapes
        .iter()
        .map(|(exchange, key, id, body)| {
            json!({"publish": {"exchange": exchange, "routingKey": key, "messageId": id, "body": body}})
        })
        .collect();
    assert_eq!(
        seed001(&seeds, &vhost.url(), &json!(steps)),
        all_ok(shapes.len())
    );
    for (_, _, id, _) in &shapes {
        let status = app
            .notification_when(id, |s| s["status"] == "delivered")
            .await;
        assert_eq!(status["status"], "delivered", "{id}: {status}");
    }
    let stored = audit_records(&app, "shapes", 2).await;
    assert!(
        stored
            .iter()
            .any(|r| r["timestamp"] == "2026-01-31T12:00:00Z"),
        "the epoch milliseconds are the event's time: {stored:?}"
    );
    // The same envelope over HTTP.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/notifications/email",
            Some(&envelope("http-email", "email_notification", email)),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let status = app
        .notification_when(&id, |s| s["status"] == "delivered")
        .await;
    assert_eq!(status["status"], "delivered", "{status}");
    app.stop().await;
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1; cargo nextest run --run-ignored all runs it"]
async fn migrate_without_the_management_api_prints_the_policies_and_writes_definitions() {
    let vhost = Vhost::new().await;
    let dir = tempfile::TempDir::new().unwrap();
    let definitions = dir.path().join("rabbitmq.json");
    let migrating = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["migrate", "--definitions"])
        .arg(&definitions)
        .current_dir(dir.path())
        .env("RABBITMQ_URL", vhost.url())
        // Nothing listens on port 1: the management API is out of reach.
        .env(
            "HERALD__BROKER__RABBITMQ__MANAGEMENT_URL",
            "http://guest:guest@127.0.0.1:1",
        )
        .env_remove("DATABASE_URL")
        .output();
    let output = tokio::task::spawn_blocking(move || migrating.unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = format!(
        "rabbitmqctl set_policy --vhost '{}' --priority 10 --apply-to queues 'herald.chat.messages' '^(chat\\.messages)$' ",
        vhost.name
    );
    assert!(stdout.contains(&line), "{stdout}");
    assert!(
        stdout.contains("\"overflow\":\"reject-publish\""),
        "{stdout}"
    );
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&definitions).unwrap()).unwrap();
    let names: Vec<&str> = file["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "herald.chat.messages",
            "herald.push.notifications",
            "herald.email.notifications",
            "herald.audit.events",
            "herald.user.updates",
            "herald.exchanges.unrouted"
        ]
    );
    // The topology itself was declared, without the policies.
    let queue = vhost.queue("chat.messages").await;
    assert_eq!(queue["arguments"]["x-max-length"], 100_000, "{queue}");
    vhost.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn seed_000s_chat_publish_reaches_the_other_participant_on_its_own_exchange_and_key() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    // Seed 000's names: exchange chat.messages, routing key message.new, queue
    // message.delivery; its service knows no tenants.
    let app = herald_on(
        &vhost,
        Roles::everything(),
        &[
            ("queues.chat.name", "message.delivery"),
            ("queues.chat.exchange", "chat.messages"),
            ("queues.chat.routing_keys", r#"["message.new"]"#),
            ("broker.default_tenant", r#""1""#),
        ],
    )
    .await;
    let mut sockets = Vec::new();
    for user in ["ada", "bob"] {
        let token = socket::token(&app, user).await;
        let mut connection = socket::open(&app.address, &token, None).await;
        socket::until_ready(&mut connection).await;
        sockets.push(connection);
    }
    // publishMessage({messageId, chatId, senderId, content, participants}), as seed 000's
    // guide writes it.
    let message = json!({"messageId": "6650f1c2e4b0a1b2c3d4e5f6", "chatId": "chat-1",
                         "senderId": "ada", "content": "Hello!", "participants": ["ada", "bob"]});
    let steps = json!([{"publish": {"exchange": "chat.messages", "routingKey": "message.new",
                                    "body": message}}]);
    assert_eq!(seed001(&seeds, &vhost.url(), &steps), all_ok(1));
    let frame = socket::next(&mut sockets[1]).await;
    assert_eq!(frame["type"], "message:new", "{frame}");
    assert_eq!(frame["data"]["content"], "Hello!");
    assert_eq!(frame["data"]["conversationId"], "chat-1");
    assert!(
        socket::quiet(&mut sockets[0], Duration::from_millis(500)).await,
        "the sender is not sent its own message"
    );
    app.stop().await;
    vhost.delete().await;
}
