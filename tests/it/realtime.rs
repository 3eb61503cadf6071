//! Real time end to end, with a real WebSocket client (tokio-tungstenite): tokens, chat
//! delivery across two instances on RabbitMQ, replay after being offline, order within a
//! conversation, and slow clients.

use crate::support::socket::{next, open, quiet, token, token_at, until_ready};
use crate::support::{self, TestApp};
use futures_util::{SinkExt, StreamExt};
use herald::app::{Herald, Roles};
use herald::config::BrokerKind;
use herald::shutdown::Shutdown;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn chat(id: &str, conversation: &str, recipients: &[&str], content: &str) -> Value {
    json!({
        "messageId": id, "conversationId": conversation, "senderId": "ada",
        "recipientIds": recipients, "content": content, "messageType": "text",
        "timestamp": "2026-11-23T10:00:00Z",
    })
}

async fn post(app: &TestApp, message: &Value) {
    let (status, body) = app
        .call(Method::POST, "/v1/chat/messages", Some(message))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_tokens_are_refused_before_the_upgrade() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let good = token(&app, "bob").await;
    let url = |token: &str| {
        format!(
            "{}/v1/realtime?token={token}",
            app.address.replacen("http", "ws", 1)
        )
    };
    for bad in [
        good.replace('.', ".x"),
        "not-a-token".to_owned(),
        String::new(),
    ] {
        let refused = tokio_tungstenite::connect_async(url(&bad)).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("a bad token opened a socket: {:?}", other.map(|_| ())),
        }
    }
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/realtime/tokens",
            Some(&json!({"userId": "bob", "ttlSeconds": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    match tokio_tungstenite::connect_async(url(body["token"].as_str().unwrap())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("an expired token opened a socket: {:?}", other.map(|_| ())),
    }
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/realtime/tokens",
            Some(&json!({"ttlSeconds": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut socket = open(&app.address, &good, None).await;
    assert!(until_ready(&mut socket).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_replays_exactly_what_it_missed_in_order_then_live_events() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let bob = token(&app, "bob").await;
    // Two sockets of one user (two tabs) each get every event.
    let mut socket = open(&app.address, &bob, None).await;
    let mut tab = open(&app.address, &bob, None).await;
    until_ready(&mut socket).await;
    until_ready(&mut tab).await;
    post(&app, &chat("m0", "c1", &["bob"], "before")).await;
    let first = next(&mut socket).await;
    assert_eq!(first["type"], "message:new");
    assert_eq!(first["data"]["content"], "before");
    assert_eq!(next(&mut tab).await["data"]["content"], "before");
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    drop(socket);
    drop(tab);

    for (i, content) in ["one", "two", "three"].iter().enumerate() {
        post(&app, &chat(&format!("m{}", i + 1), "c1", &["bob"], content)).await;
    }
    // Let the worker store them while bob is away.
    let stored = support::eventually(Duration::from_secs(10), || async {
        let store = &app.herald.store;
        let tenant = herald::domain::TenantId::parse("1").unwrap();
        store
            .events_after(&tenant, "bob", 0, 10)
            .await
            .unwrap()
            .len()
            == 4
    })
    .await;
    assert!(stored);

    let mut socket = open(&app.address, &bob, Some(&cursor)).await;
    let missed = until_ready(&mut socket).await;
    let contents: Vec<&str> = missed
        .iter()
        .map(|f| f["data"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["one", "two", "three"],
        "exactly what it missed, in order"
    );
    let sequences: Vec<i64> = missed
        .iter()
        .map(|f| f["data"]["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [2, 3, 4]);
    post(&app, &chat("m4", "c1", &["bob"], "live")).await;
    assert_eq!(next(&mut socket).await["data"]["content"], "live");
    // A redelivered message id is not delivered twice.
    post(&app, &chat("m4", "c1", &["bob"], "live")).await;
    assert!(quiet(&mut socket, Duration::from_millis(800)).await);

    // Acknowledge up to "two": a socket opened without a cursor resumes after it.
    let two = missed[1]["cursor"].as_str().unwrap();
    socket
        .send(Message::Text(
            json!({"type": "ack", "cursor": two}).to_string().into(),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(socket);
    let mut socket = open(&app.address, &bob, None).await;
    let replayed: Vec<String> = until_ready(&mut socket)
        .await
        .iter()
        .map(|f| f["data"]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(replayed, ["three", "live"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_within_a_conversation_holds_under_concurrent_sends() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let mut bob = open(&app.address, &token(&app, "bob").await, None).await;
    let mut cy = open(&app.address, &token(&app, "cy").await, None).await;
    until_ready(&mut bob).await;
    until_ready(&mut cy).await;
    let sends: Vec<_> = (0..40)
        .map(|i| {
            let message = chat(&format!("m{i}"), "group-1", &["bob", "cy"], &format!("{i}"));
            let app = &app;
            async move { post(app, &message).await }
        })
        .collect();
    futures_util::future::join_all(sends).await;
    let mut orders = Vec::new();
    for socket in [&mut bob, &mut cy] {
        let mut order = Vec::new();
        for _ in 0..40 {
            let frame = next(socket).await;
            order.push((
                frame["data"]["sequence"].as_i64().unwrap(),
                frame["data"]["messageId"].as_str().unwrap().to_owned(),
            ));
        }
        let sequences: Vec<i64> = order.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sequences,
            (1..=40).collect::<Vec<_>>(),
            "in conversation order"
        );
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1], "every participant sees one order");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_without_holding_back_others() {
    let overrides = [("realtime.send_timeout", "500ms")];
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &overrides).await;
    let mut slow = open(&app.address, &token(&app, "slow").await, None).await;
    let mut quick = open(&app.address, &token(&app, "quick").await, None).await;
    until_ready(&mut slow).await;
    until_ready(&mut quick).await;
    // The slow client stops reading; large messages fill the socket's buffers (on
    // loopback they take several megabytes).
    let big = "x".repeat(60_000);
    for i in 0..250 {
        post(&app, &chat(&format!("s{i}"), "c-slow", &["slow"], &big)).await;
    }
    post(&app, &chat("q1", "c-quick", &["quick"], "still here")).await;
    assert_eq!(next(&mut quick).await["data"]["content"], "still here");
    let dropped = support::eventually(Duration::from_secs(15), || async {
        app.herald.realtime.hub.connection_count() == 1
    })
    .await;
    assert!(dropped, "the slow client was disconnected");
    // It catches up by replay: everything is there, from the start.
    let stored = support::eventually(Duration::from_secs(20), || async {
        let tenant = herald::domain::TenantId::parse("1").unwrap();
        let store = &app.herald.store;
        store
            .events_after(&tenant, "slow", 0, 1000)
            .await
            .unwrap()
            .len()
            == 250
    })
    .await;
    assert!(stored);
    let mut again = open(&app.address, &token(&app, "slow").await, Some("0")).await;
    assert_eq!(until_ready(&mut again).await.len(), 250);
    app.stop().await;
}

/// Herald on RabbitMQ and the given PostgreSQL, sharing `prefix` with other instances.
pub(crate) async fn instance(
    database: &str,
    prefix: &str,
    roles: Roles,
) -> (Herald, String, Shutdown) {
    support::require_rabbitmq();
    let dir = tempfile::TempDir::new().unwrap();
    let settings = support::settings(
        BrokerKind::Rabbitmq,
        dir.path(),
        prefix,
        &[("database.url", database)],
    );
    let herald = Herald::start(settings).await.expect("Herald starts");
    let shutdown = Shutdown::new();
    let (address, _) = support::serve(&herald, roles, &shutdown).await;
    std::mem::forget(dir);
    (herald, address, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs RabbitMQ on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432 (HERALD_TEST_RABBITMQ_URL, HERALD_TEST_POSTGRES_URL); cargo nextest run --run-ignored all runs it"]
async fn a_message_posted_to_one_instance_reaches_its_recipient_on_another_once() {
    let database = support::fresh_postgres_database().await;
    let prefix = support::unique_prefix();
    let (a, a_address, a_stop) = instance(&database, &prefix, Roles::everything()).await;
    let (b, b_address, b_stop) = instance(&database, &prefix, Roles::api_only()).await;
    let key = support::tenant_key(&a, "1").await;
    let client = support::http_client();
    // Bob is connected to B; the message is posted to A, whose worker stores and fans it
    // out.
    let mut socket = open(&b_address, &token_at(&b_address, &key, "bob").await, None).await;
    until_ready(&mut socket).await;
    let response = client
        .post(format!("{a_address}/v1/chat/messages"))
        .bearer_auth(&key)
        .json(&chat("x1", "c1", &["bob"], "across instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let frame = next(&mut socket).await;
    assert_eq!(frame["type"], "message:new");
    assert_eq!(frame["data"]["content"], "across instances");
    assert!(
        quiet(&mut socket, Duration::from_secs(1)).await,
        "delivered once"
    );
    assert_eq!(
        a.realtime.hub.connection_count(),
        0,
        "A holds no connection of bob's"
    );
    drop(socket);
    a_stop.raise();
    b_stop.raise();
    tokio::time::sleep(Duration::from_millis(300)).await;
    support::delete_rabbitmq_topology(&b.topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_receipt_reaches_the_sender() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let mut ada = open(&app.address, &token(&app, "ada").await, None).await;
    let mut bob = open(&app.address, &token(&app, "bob").await, None).await;
    until_ready(&mut ada).await;
    until_ready(&mut bob).await;
    post(&app, &chat("r1", "c1", &["bob", "cy"], "read me")).await;
    assert_eq!(next(&mut bob).await["data"]["messageId"], "r1");
    // Bob reads it from his socket.
    bob.send(Message::Text(
        json!({"type": "read", "messageId": "r1"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let receipt = next(&mut ada).await;
    assert_eq!(receipt["type"], "message:read");
    assert_eq!(receipt["data"]["userId"], "bob");
    assert_eq!(receipt["data"]["messageId"], "r1");
    // Cy reads it over HTTP.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/chat/messages/r1/read",
            Some(&json!({"userId": "cy"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], true);
    assert_eq!(next(&mut ada).await["data"]["userId"], "cy");
    let (_, again) = app
        .call(
            Method::POST,
            "/v1/chat/messages/r1/read",
            Some(&json!({"userId": "cy"})),
        )
        .await;
    assert_eq!(again["recorded"], false, "a second read is not sent again");
    assert!(quiet(&mut ada, Duration::from_millis(500)).await);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/chat/messages/r1/read",
            Some(&json!({"userId": "eve"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "eve was not sent the message"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/chat/messages/nope/read",
            Some(&json!({"userId": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_sent_to_subscribers_and_a_dead_connection_is_noticed() {
    let app = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::api_only(),
        &[("realtime.heartbeat", "300ms")],
    )
    .await;
    let mut watcher = open(&app.address, &token(&app, "watcher").await, None).await;
    until_ready(&mut watcher).await;
    watcher
        .send(Message::Text(
            json!({"type": "presence:subscribe", "userIds": ["bob"]})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let initial = next(&mut watcher).await;
    assert_eq!(initial["type"], "user:presence");
    assert_eq!(
        initial["data"],
        json!({"userId": "bob", "online": false, "lastSeen": null})
    );

    // Bob connects, and then stops answering (a dead network: no pongs).
    let bob = open(&app.address, &token(&app, "bob").await, None).await;
    let online = next(&mut watcher).await;
    assert_eq!(online["data"]["online"], true, "{online}");
    let (_, now) = app
        .call(Method::GET, "/v1/presence?userIds=bob,nobody", None)
        .await;
    assert_eq!(now["users"][0]["online"], true);
    assert_eq!(
        now["users"][1],
        json!({"userId": "nobody", "online": false, "lastSeen": null})
    );

    // Three silent heartbeats later the connection is closed and bob is offline.
    let offline = next(&mut watcher).await;
    assert_eq!(offline["data"]["online"], false, "{offline}");
    assert!(offline["data"]["lastSeen"].is_string());
    let (_, now) = app
        .call(Method::GET, "/v1/presence?userIds=bob", None)
        .await;
    assert_eq!(now["users"][0]["online"], false);
    drop(bob);
    let (status, _) = app.call(Method::GET, "/v1/presence", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_notifications_are_kept_and_each_change_is_sent_live() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let mut bob = open(&app.address, &token(&app, "bob").await, None).await;
    until_ready(&mut bob).await;
    let push = |title: &str| json!({"recipientIds": ["bob"], "title": title, "body": "In the app", "inApp": true});
    let (status, sent) = app
        .call(Method::POST, "/v1/notifications/push", Some(&push("First")))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = sent["id"].as_str().unwrap().to_owned();
    let new = next(&mut bob).await;
    assert_eq!(new["type"], "notification:new");
    assert_eq!(new["data"]["title"], "First");
    assert_eq!(new["data"]["id"], id.as_str());
    let (_, inbox) = app.call(Method::GET, "/v1/users/bob/inbox", None).await;
    assert_eq!(inbox["unread"], 1);
    assert_eq!(inbox["items"][0]["notification"]["title"], "First");

    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/users/bob/inbox/{id}/read"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(next(&mut bob).await["type"], "notification:read");
    let (_, inbox) = app.call(Method::GET, "/v1/users/bob/inbox", None).await;
    assert_eq!(inbox["unread"], 0);
    assert!(inbox["items"][0]["readAt"].is_string());

    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/users/bob/inbox/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(next(&mut bob).await["type"], "notification:deleted");
    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/users/bob/inbox/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for title in ["Second", "Third"] {
        app.call(Method::POST, "/v1/notifications/push", Some(&push(title)))
            .await;
        assert_eq!(next(&mut bob).await["type"], "notification:new");
    }
    let (status, _) = app.call(Method::DELETE, "/v1/users/bob/inbox", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(next(&mut bob).await["type"], "notification:cleared");
    let (_, inbox) = app.call(Method::GET, "/v1/users/bob/inbox", None).await;
    assert_eq!(inbox["items"], json!([]));
    app.stop().await;
}

/// A client that closes its socket gets the close answered (it sees its own 1000 back,
/// not 1006 for a dropped connection); a GET without the upgrade is the contract's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_close_is_answered_and_a_plain_get_is_told_to_upgrade() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let bob = token(&app, "bob").await;
    let mut socket = open(&app.address, &bob, None).await;
    until_ready(&mut socket).await;
    socket
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an answer within 5 s")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("the close was not answered: {other:?}"),
        }
    };
    assert_eq!(
        answer.map(|f| u16::from(f.code)),
        Some(1000),
        "the server echoes the client's code"
    );

    let response = app.get(&format!("/v1/realtime?token={bob}")).await;
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let body: Value = response.json().await.expect("the contract's error shape");
    assert_eq!(body["error"]["code"], "upgrade_required", "{body}");
    app.stop().await;
}
