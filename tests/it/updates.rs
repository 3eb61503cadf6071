//! Per-user updates (seed 004): posted over HTTP or published over AMQP as seed 004's
//! update worker does, each reaches its user's WebSocket as `chat3:update` and
//! `message:update` (or `dialog:update`) with seed 004's Update structure, no other user,
//! and again by replay after a reconnect; a bad one is refused in the contract's shape.
//! Edits, deletions and reactions of Herald's own chat messages reach everyone the message
//! went to the same way.

use crate::sharing::herald_on;
use crate::support::seeds::{Vhost, seed_clients, seed004};
use crate::support::socket::{Socket, next, open, quiet, token, until_ready};
use crate::support::{self, TestApp};
use herald::app::Roles;
use herald::config::BrokerKind;
use herald::domain::{EventKind, TenantId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Seed 004's reaction update, as its guide's frontend reads it (`update.entityId`,
/// `update.data.reactionCounts`), without the user and what its worker stamps.
fn reaction() -> Value {
    json!({
        "eventType": "message.reaction.add",
        "dialogId": "507f1f77bcf86cd799439012",
        "entityId": "507f1f77bcf86cd799439013",
        "data": {"_id": "507f1f77bcf86cd799439013", "reaction": "👍",
                 "reactionCounts": {"👍": 1}},
    })
}

/// Posts `update` for `user`; answers the update's id.
async fn post_update(app: &TestApp, user: &str, update: &Value) -> String {
    let path = format!("/v1/users/{user}/updates");
    let (status, body) = app.call(Method::POST, &path, Some(update)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A socket of `user`, past its replay.
async fn connected(app: &TestApp, user: &str) -> Socket {
    let mut socket = open(&app.address, &token(app, user).await, None).await;
    until_ready(&mut socket).await;
    socket
}

/// The next two frames: an update under `chat3:update`, then under `second`.
async fn both_names(socket: &mut Socket, second: &str) -> Value {
    let first = next(socket).await;
    assert_eq!(first["type"], "chat3:update", "{first}");
    let again = next(socket).await;
    assert_eq!(again["type"], second, "{again}");
    assert_eq!(first["data"], again["data"], "one update under two names");
    first["data"].clone()
}

/// How many events `user`'s log holds.
async fn logged(app: &TestApp, user: &str) -> usize {
    let tenant = TenantId::parse("1").unwrap();
    let store = &app.herald.store;
    store
        .events_after(&tenant, user, 0, 100)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_posted_for_a_user_reaches_only_that_users_socket_under_both_names() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let mut ann = connected(&app, "ann").await;
    let mut ben = connected(&app, "ben").await;
    let id = post_update(&app, "ann", &reaction()).await;
    let update = both_names(&mut ann, "message:update").await;
    assert_eq!(update["_id"], id.as_str());
    assert_eq!(update["tenantId"], "1");
    assert_eq!(update["userId"], "ann");
    assert_eq!(update["eventType"], "message.reaction.add");
    assert_eq!(update["dialogId"], "507f1f77bcf86cd799439012");
    assert_eq!(update["entityId"], "507f1f77bcf86cd799439013");
    assert_eq!(
        update["eventId"],
        id.as_str(),
        "no eventId given: the update's own"
    );
    assert_eq!(update["data"]["reactionCounts"]["👍"], 1);
    assert_eq!(update["published"], true);
    assert!(update["createdAt"].is_string(), "{update}");
    // A dialog update goes out as dialog:update.
    let member = json!({"eventType": "dialog.member.add", "dialogId": "d1",
                        "eventId": "evt-7", "data": {"userId": "cy"}});
    post_update(&app, "ann", &member).await;
    let update = both_names(&mut ann, "dialog:update").await;
    assert_eq!(update["eventId"], "evt-7");
    assert_eq!(update["entityId"], Value::Null);
    assert!(
        quiet(&mut ben, Duration::from_millis(500)).await,
        "another user hears nothing"
    );
    assert_eq!(logged(&app, "ben").await, 0);
    let status = app
        .notification_when(&id, |s| s["status"] == "delivered")
        .await;
    assert_eq!(status["status"], "delivered", "{status}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_sent_while_offline_is_replayed_on_reconnecting_and_stored_once() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let ann = token(&app, "ann").await;
    let mut socket = open(&app.address, &ann, None).await;
    until_ready(&mut socket).await;
    drop(socket);
    post_update(&app, "ann", &reaction()).await;
    let stored = support::eventually(Duration::from_secs(10), || async {
        logged(&app, "ann").await == 2
    })
    .await;
    assert!(stored, "the update is in the log while ann is away");
    let mut socket = open(&app.address, &ann, None).await;
    let replayed = until_ready(&mut socket).await;
    let kinds: Vec<&str> = replayed
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["chat3:update", "message:update"]);
    assert_eq!(replayed[0]["data"]["eventType"], "message.reaction.add");
    // From the first row's cursor, only the second is left.
    let cursor = replayed[0]["cursor"].as_str().unwrap();
    let mut resumed = open(&app.address, &ann, Some(cursor)).await;
    let rest = until_ready(&mut resumed).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["type"], "message:update");
    // The same update appended again (a redelivery) adds nothing.
    let tenant = TenantId::parse("1").unwrap();
    let id = replayed[0]["data"]["_id"].as_str().unwrap();
    let rows = [
        ("ann", "chat3:update", "{}".to_owned()),
        ("ann", "message:update", "{}".to_owned()),
    ];
    let log = &app.herald.store;
    log.append_update(&tenant, id, &rows).await.unwrap();
    assert_eq!(logged(&app, "ann").await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_update_is_refused_naming_each_field_in_the_contracts_shape() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let refused = |path: String, body: Value| {
        let app = &app;
        async move {
            let (status, body) = app.call(Method::POST, &path, Some(&body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(body["error"]["code"], "validation_failed", "{body}");
            let details = body["error"]["details"].as_array().unwrap().clone();
            details
                .iter()
                .map(|d| d["field"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let fields = refused(
        "/v1/users/ann/updates".into(),
        json!({"eventType": "user.created", "data": "not an object", "dialogId": ""}),
    )
    .await;
    assert_eq!(fields, ["eventType", "dialogId", "data"]);
    let big = json!({"eventType": "message.update",
                     "data": {"content": "x".repeat(herald::domain::UPDATE_DATA_MAX_BYTES)}});
    assert_eq!(refused("/v1/users/ann/updates".into(), big).await, ["data"]);
    let mut other = reaction();
    other["userId"] = json!("ben");
    assert_eq!(
        refused("/v1/users/ann/updates".into(), other).await,
        ["userId"]
    );
    let long = "u".repeat(129);
    assert_eq!(
        refused(format!("/v1/users/{long}/updates"), reaction()).await,
        ["userId"]
    );
    let no_type = json!({"data": {}});
    assert_eq!(
        refused("/v1/users/ann/updates".into(), no_type).await,
        ["eventType"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn a_seed_004_reaction_published_over_amqp_reaches_that_user_as_chat3_and_message_update() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    let app = herald_on(&vhost, Roles::everything(), &[]).await;
    let mut ann = connected(&app, "usr_ann").await;
    let mut ben = connected(&app, "usr_ben").await;
    let mut update = reaction();
    update["tenantId"] = json!("1");
    update["userId"] = json!("usr_ann");
    // A payload naming another user than its key is refused, not delivered to either.
    let mut forged = update.clone();
    forged["userId"] = json!("usr_ben");
    // The worker's own exchange declaration succeeds beside Herald's.
    let steps = json!([
        {"setup": {}},
        {"update": {"routingKey": "user.usr_ann.message.reaction.add", "update": forged}},
        {"update": {"routingKey": "user.usr_ann.message.reaction.add", "update": update}},
    ]);
    let ok: Vec<Value> = (0..3).map(|i| json!({"step": i, "ok": true})).collect();
    assert_eq!(seed004(&seeds, &vhost.url(), &steps), ok);
    let delivered = both_names(&mut ann, "message:update").await;
    assert_eq!(delivered["userId"], "usr_ann");
    assert_eq!(delivered["eventType"], "message.reaction.add");
    assert_eq!(delivered["data"]["reactionCounts"]["👍"], 1);
    assert!(
        quiet(&mut ben, Duration::from_millis(800)).await,
        "no other user hears it"
    );
    assert!(quiet(&mut ann, Duration::from_millis(200)).await, "once");
    let letters = app.dead_letters(EventKind::Update, 1).await;
    assert_eq!(letters.len(), 1, "the forged update is dead-lettered");
    let reason = letters[0].last_error.as_deref().unwrap_or_default();
    assert!(reason.contains("userId"), "{reason}");
    let queue = vhost
        .queue_when("user.updates", |q| q["policy"] == "herald.user.updates")
        .await;
    assert_eq!(queue["policy"], "herald.user.updates", "{queue}");
    app.stop().await;
    vhost.delete().await;
}

/// Sends a change to a chat message (`method` on `path`), which must be accepted.
async fn change(app: &TestApp, method: Method, path: &str, body: Option<&Value>) -> Value {
    let (status, answer) = app.call(method, path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletions_and_reactions_of_a_chat_message_reach_everyone_it_went_to() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let members = json!({"type": "group", "members": ["ada", "bob", "cy"]});
    let (status, body) = app
        .call(Method::PUT, "/v1/conversations/c1", Some(&members))
        .await;
    assert!(status.is_success(), "{body}");
    let mut ada = connected(&app, "ada").await;
    let mut bob = connected(&app, "bob").await;
    let mut cy = connected(&app, "cy").await;
    let mut dan = connected(&app, "dan").await;
    let message = json!({"messageId": "m1", "conversationId": "c1", "senderId": "ada",
                         "content": "hello"});
    let (status, body) = app
        .call(Method::POST, "/v1/chat/messages", Some(&message))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for member in [&mut bob, &mut cy] {
        assert_eq!(next(member).await["type"], "message:new");
    }
    let edit = json!({"content": "hello, edited"});
    change(&app, Method::PATCH, "/v1/chat/messages/m1", Some(&edit)).await;
    let reaction = json!({"userId": "bob", "reaction": "👍"});
    let path = "/v1/chat/messages/m1/reactions";
    change(&app, Method::POST, path, Some(&reaction)).await;
    change(&app, Method::DELETE, "/v1/chat/messages/m1", None).await;
    for (user, socket) in [("ada", &mut ada), ("bob", &mut bob), ("cy", &mut cy)] {
        let edited = both_names(socket, "message:update").await;
        assert_eq!(edited["eventType"], "message.update");
        assert_eq!(edited["userId"], user);
        assert_eq!(edited["dialogId"], "c1");
        assert_eq!(edited["entityId"], "m1");
        assert_eq!(edited["data"]["content"], "hello, edited");
        let reacted = both_names(socket, "message:update").await;
        assert_eq!(reacted["eventType"], "message.reaction.add");
        assert_eq!(reacted["data"], json!({"userId": "bob", "reaction": "👍"}));
        let deleted = both_names(socket, "message:update").await;
        assert_eq!(deleted["eventType"], "message.delete");
    }
    assert!(
        quiet(&mut dan, Duration::from_millis(300)).await,
        "no one else"
    );
    // A message sent to named recipients: they and its sender get its changes.
    let named = json!({"messageId": "m2", "conversationId": "c2", "senderId": "ada",
                       "recipientIds": ["dan"], "content": "hi dan"});
    let (status, body) = app
        .call(Method::POST, "/v1/chat/messages", Some(&named))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(next(&mut dan).await["type"], "message:new");
    change(&app, Method::DELETE, "/v1/chat/messages/m2", None).await;
    for socket in [&mut ada, &mut dan] {
        let deleted = both_names(socket, "message:update").await;
        assert_eq!(deleted["entityId"], "m2");
    }
    assert!(quiet(&mut bob, Duration::from_millis(300)).await);
    // An unknown message is 404; a reaction without one is 422.
    let (status, body) = app
        .call(Method::PATCH, "/v1/chat/messages/nope", Some(&edit))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .call(Method::POST, path, Some(&json!({"userId": "bob"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "reaction");
    app.stop().await;
}
