//! Seed 002's Socket.IO clients in a conversation, with socket.io-client v4 itself
//! (tests/seeds/realtime.mjs): typing indicators to the other member only, throttled;
//! `message:send` through the ingress, answered with `message:sent` and the ack callback,
//! sent as the token's user, once per `messageId`, refused in the contract's shape; the
//! other member's replay of what it missed. On one instance, and with each member on its
//! own instance of two sharing RabbitMQ and PostgreSQL. Then seed 004's update published
//! over AMQP reaching its user's Socket.IO client under both names.

use crate::realtime::instance;
use crate::sharing::herald_on;
use crate::support::seeds::{Vhost, realtime_client, seed_clients};
use crate::support::socket::token_at as token;
use crate::support::{self, TestApp};
use herald::app::Roles;
use herald::config::BrokerKind;
use serde_json::{Value, json};
use std::time::Duration;

/// Runs the conversation scenario with ann connected to `ann_base` and bob to
/// `bob_base`, and checks what each saw.
async fn conversation(seeds: &std::path::Path, key: &str, ann_base: &str, bob_base: &str) {
    let defined = support::http_client()
        .put(format!("{ann_base}/v1/conversations/c-sio"))
        .bearer_auth(key)
        .json(&json!({"type": "direct", "members": ["ann", "bob"]}))
        .send()
        .await
        .unwrap();
    assert!(defined.status().is_success(), "{}", defined.status());
    // A conversation too large for typing to be passed on: ann and 1,001 others.
    let crowd: Vec<String> = std::iter::once("ann".to_owned())
        .chain((0..1001).map(|i| format!("member-{i}")))
        .collect();
    let defined = support::http_client()
        .put(format!("{ann_base}/v1/conversations/c-crowd"))
        .bearer_auth(key)
        .json(&json!({"type": "group", "members": crowd}))
        .send()
        .await
        .unwrap();
    assert!(defined.status().is_success(), "{}", defined.status());
    let config = json!({
        "key": key, "conversation": "c-sio", "crowd": "c-crowd",
        "ann": {"base": ann_base, "token": token(ann_base, key, "ann").await, "user": "ann"},
        "bob": {"base": bob_base, "token": token(bob_base, key, "bob").await, "user": "bob"},
    });
    let seen = realtime_client(seeds, "conversation", &config).await;

    // Typing: one start for five, then the stop, to bob only; not to a non-member's room.
    let typing: Vec<(Value, Value, Value)> = seen["typing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["conversationId"].clone(),
                t["userId"].clone(),
                t["isTyping"].clone(),
            )
        })
        .collect();
    assert_eq!(
        typing,
        [
            (json!("c-sio"), json!("ann"), json!(true)),
            (json!("c-sio"), json!("ann"), json!(false)),
        ],
        "{seen}"
    );
    assert_eq!(seen["typingToTyper"], 0, "{seen}");
    assert_eq!(
        seen["typingElsewhere"]["error"]["code"], "forbidden",
        "{seen}"
    );
    assert_eq!(
        seen["typingInCrowd"]["error"]["code"], "forbidden",
        "typing is not fanned out to more than 1,000 members: {seen}"
    );

    // message:send: acknowledged both ways with the same answer, sent as ann.
    let ack = &seen["ack"];
    assert_eq!(ack["status"], "queued", "{seen}");
    assert_eq!(ack["chatId"], "c-sio", "{seen}");
    assert!(ack["messageId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(ack["id"].as_str().is_some(), "{seen}");
    assert_eq!(&seen["sent"], ack, "message:sent says what the ack says");
    let repeat = seen["repeat"].as_array().unwrap();
    assert_eq!(
        repeat[0]["id"], repeat[1]["id"],
        "one message per messageId"
    );
    assert_eq!(repeat[0]["messageId"], "m-fixed");
    let invalid = &seen["invalid"];
    assert_eq!(invalid["error"]["code"], "validation_failed", "{seen}");
    assert_eq!(invalid["error"]["details"][0]["field"], "content", "{seen}");
    assert_eq!(invalid["messageId"], "m-bad", "{seen}");
    assert_eq!(
        &seen["errorEvent"], invalid,
        "message:error says what the ack says"
    );
    assert_eq!(
        seen["bobGot"],
        json!([
            {"messageId": ack["messageId"], "senderId": "ann", "content": "from the socket"},
            {"messageId": "m-fixed", "senderId": "ann", "content": "once"},
        ]),
        "bob gets each message once, from ann whatever the payload claimed"
    );
    assert_eq!(seen["annGotOwn"], 0, "a sender is not sent its own message");

    // Bob's replay on coming back, then live messages again.
    assert_eq!(
        seen["missed"],
        json!(["away one", "away two", "away three"]),
        "{seen}"
    );
    assert_eq!(seen["live"], "live again", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_on_one_instance_type_send_from_the_socket_and_replay() {
    let Some(seeds) = seed_clients() else { return };
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    conversation(&seeds, &app.key, &app.address, &app.address).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ on 127.0.0.1:5672, PostgreSQL on 127.0.0.1:5432 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn two_members_on_two_instances_sharing_rabbitmq_type_send_and_replay() {
    let Some(seeds) = seed_clients() else { return };
    let database = support::fresh_postgres_database().await;
    let prefix = support::unique_prefix();
    let (a, a_address, a_stop) = instance(&database, &prefix, Roles::everything()).await;
    let (b, b_address, b_stop) = instance(&database, &prefix, Roles::api_only()).await;
    let key = support::tenant_key(&a, "1").await;
    conversation(&seeds, &key, &a_address, &b_address).await;
    assert_eq!(a.realtime.hub.connection_count(), 0, "ann has left A");
    a_stop.raise();
    b_stop.raise();
    tokio::time::sleep(Duration::from_millis(300)).await;
    support::delete_rabbitmq_topology(&b.topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ with its management plugin on 127.0.0.1 and Node.js with tests/seeds installed; cargo nextest run --run-ignored all runs it"]
async fn a_seed_004_update_over_amqp_reaches_its_users_socket_io_client_under_both_names() {
    let Some(seeds) = seed_clients() else { return };
    let vhost = Vhost::new().await;
    let app = herald_on(&vhost, Roles::everything(), &[]).await;
    let update = json!({
        "tenantId": "1", "userId": "usr_ann", "eventType": "message.reaction.add",
        "dialogId": "507f1f77bcf86cd799439012", "entityId": "507f1f77bcf86cd799439013",
        "data": {"_id": "507f1f77bcf86cd799439013", "reaction": "👍",
                 "reactionCounts": {"👍": 1}},
    });
    let config = json!({
        "base": app.address, "amqp": vhost.url(),
        "ann": {"token": token(&app.address, &app.key, "usr_ann").await},
        "ben": {"token": token(&app.address, &app.key, "usr_ben").await},
        "steps": [
            {"setup": {}},
            {"update": {"routingKey": "user.usr_ann.message.reaction.add", "update": update}},
        ],
    });
    let seen = realtime_client(&seeds, "updates", &config).await;
    assert_eq!(
        seen["published"],
        json!([{"step": 0, "ok": true}, {"step": 1, "ok": true}])
    );
    let names: Vec<&str> = seen["ann"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chat3:update", "message:update"], "{seen}");
    for event in seen["ann"].as_array().unwrap() {
        assert_eq!(event["data"]["userId"], "usr_ann", "{seen}");
        assert_eq!(event["data"]["eventType"], "message.reaction.add", "{seen}");
        assert_eq!(event["data"]["data"]["reactionCounts"]["👍"], 1, "{seen}");
    }
    assert_eq!(seen["ben"], json!([]), "no other user hears it: {seen}");
    app.stop().await;
    vhost.delete().await;
}
