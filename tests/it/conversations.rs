//! Conversations: the routes that define who is in one, a chat message without
//! `recipientIds` fanned out to the members but its sender (a page at a time), and a
//! whole conversation marked read.

use crate::support::TestApp;
use crate::support::socket::{next, open, quiet, token, until_ready};
use herald::app::Roles;
use herald::config::BrokerKind;
use herald::domain::TenantId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Seed 001's `ChatMessage`, exactly as its `sendChatMessage` example sends it
/// (`new Date()` goes on the wire as an ISO 8601 string): no `recipientIds`.
fn seed_001_chat_message() -> Value {
    json!({
        "messageId": "msg_123",
        "conversationId": "conv_456",
        "senderId": "user_789",
        "tenantId": 1,
        "content": "Hello world!",
        "messageType": "text",
        "timestamp": "2026-01-31T12:00:00.000Z"
    })
}

async fn define(app: &TestApp, conversation: &str, kind: &str, members: &[&str]) -> Value {
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/conversations/{conversation}"),
            Some(&json!({"type": kind, "members": members})),
        )
        .await;
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn send(app: &TestApp, message: &Value) -> String {
    let (status, body) = app
        .call(Method::POST, "/v1/chat/messages", Some(message))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The chat messages in `user`'s log, by messageId.
async fn logged(app: &TestApp, user: &str) -> Vec<String> {
    let tenant = TenantId::parse("1").unwrap();
    app.herald
        .store
        .events_after(&tenant, user, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "message:new")
        .map(|e| {
            let payload: Value = serde_json::from_str(&e.payload).unwrap();
            payload["messageId"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001s_chat_message_reaches_the_two_other_members_over_websocket_and_not_its_sender() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    define(&app, "conv_456", "group", &["user_789", "ann", "ben"]).await;
    let mut sockets = Vec::new();
    for user in ["user_789", "ann", "ben"] {
        let mut socket = open(&app.address, &token(&app, user).await, None).await;
        until_ready(&mut socket).await;
        sockets.push(socket);
    }
    send(&app, &seed_001_chat_message()).await;
    let [sender, ann, ben] = &mut sockets[..] else {
        unreachable!()
    };
    for member in [ann, ben] {
        let frame = next(member).await;
        assert_eq!(frame["type"], "message:new", "{frame}");
        assert_eq!(frame["data"]["messageId"], "msg_123");
        assert_eq!(frame["data"]["content"], "Hello world!");
        assert_eq!(frame["data"]["senderId"], "user_789");
        assert!(frame["data"].get("recipientIds").is_none(), "{frame}");
    }
    assert!(
        quiet(sender, Duration::from_millis(500)).await,
        "the sender is not sent his own message"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_are_defined_changed_paged_and_refused_in_the_contracts_shape() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let path = "/v1/conversations/team";
    let members = json!({"type": "group", "members": ["eve", "dan", "cy", "bob", "ann", "ann"]});
    let (status, body) = app.call(Method::PUT, path, Some(&members)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["memberCount"], 5, "a repeated member counts once");
    assert_eq!(body["type"], "group");
    let (status, _) = app.call(Method::PUT, path, Some(&members)).await;
    assert_eq!(status, StatusCode::OK, "a second PUT replaces");

    // Pages by user id, each resuming after the last.
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let (status, body) = app
            .call(Method::GET, &format!("{path}?limit=2&after={after}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["memberCount"], 5);
        pages.push(body["members"].clone());
        match body["nextAfter"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [json!(["ann", "bob"]), json!(["cy", "dan"]), json!(["eve"])]
    );

    let members_path = format!("{path}/members");
    let (status, body) = app
        .call(
            Method::POST,
            &members_path,
            Some(&json!({"members": ["fay", "ann"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["memberCount"], 6);
    let (status, body) = app
        .call(
            Method::DELETE,
            &members_path,
            Some(&json!({"members": ["ann", "bob", "zed"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["members"], json!(["cy", "dan", "eve", "fay"]));

    // Another tenant's key sees nothing of it.
    let other = crate::support::tenant_key(&app.herald, "other").await;
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let (status, body) = app
        .call(Method::GET, "/v1/conversations/nobody", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/conversations/nobody/members",
            Some(&json!({"members": ["ann"]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every bad field is named at once.
    let (status, body) = app
        .call(
            Method::PUT,
            path,
            Some(&json!({"type": "crowd", "members": []})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["type", "members"]);
    let too_many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let (status, body) = app
        .call(
            Method::POST,
            &members_path,
            Some(&json!({ "members": too_many })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 1000"),
        "{body}"
    );
    define(&app, "pair", "direct", &["ann", "bob"]).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/conversations/pair/members",
            Some(&json!({"members": ["cy"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = app
        .call(Method::GET, &format!("{path}?limit=0"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_ids_and_seed_000s_participants_override_the_members() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    define(&app, "c1", "group", &["ada", "ann", "ben"]).await;
    let mut message = json!({
        "messageId": "m1", "conversationId": "c1", "senderId": "ada",
        "recipientIds": ["cy"], "content": "to cy only",
    });
    send(&app, &message).await;
    // Seed 000's publishMessage: chatId and participants (the sender among them), no
    // messageType, no timestamp.
    message = json!({
        "messageId": "m2", "chatId": "c1", "senderId": "ada",
        "participants": ["ada", "ben"], "content": "Hello!",
    });
    send(&app, &message).await;
    let app_ref = &app;
    assert!(
        crate::support::eventually(Duration::from_secs(10), || async move {
            logged(app_ref, "ben").await == ["m2"]
        })
        .await
    );
    assert_eq!(logged(&app, "cy").await, ["m1"]);
    assert!(
        logged(&app, "ann").await.is_empty(),
        "the members were not asked for"
    );
    assert!(logged(&app, "ada").await.is_empty(), "nor the sender");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_larger_than_a_page_reaches_every_member_once_and_never_its_sender() {
    let app = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::everything(),
        &[("realtime.member_page", "2")],
    )
    .await;
    let members: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    define(&app, "big", "group", &members).await;
    // The sender sits in the middle of a page.
    let mut reader = open(&app.address, &token(&app, "m6").await, None).await;
    until_ready(&mut reader).await;
    let id = send(
        &app,
        &json!({"messageId": "x1", "conversationId": "big", "senderId": "m3", "content": "hi"}),
    )
    .await;
    assert_eq!(next(&mut reader).await["data"]["messageId"], "x1");
    let status = app
        .notification_when(&id, |s| s["status"] == "delivered")
        .await;
    assert_eq!(status["status"], "delivered", "{status}");
    for member in &members {
        let expected: &[&str] = if *member == "m3" { &[] } else { &["x1"] };
        assert_eq!(logged(&app, member).await, expected, "{member}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_without_recipients_to_an_unknown_conversation_is_rejected_with_its_reason() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let id = send(&app, &seed_001_chat_message()).await;
    let status = app
        .notification_when(&id, |s| s["status"] == "rejected")
        .await;
    assert_eq!(status["status"], "rejected", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("conv_456"),
        "{status}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_a_conversation_read_sends_message_read_to_each_sender_of_what_it_covers() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    define(&app, "c1", "group", &["ada", "ben", "cy"]).await;
    let mut ada = open(&app.address, &token(&app, "ada").await, None).await;
    until_ready(&mut ada).await;
    for (id, sender) in [("m1", "ada"), ("m2", "cy"), ("m3", "ada"), ("m4", "ada")] {
        let message =
            json!({"messageId": id, "conversationId": "c1", "senderId": sender, "content": id});
        send(&app, &message).await;
    }
    let app_ref = &app;
    assert!(
        crate::support::eventually(Duration::from_secs(10), || async move {
            logged(app_ref, "ben").await.len() == 4
        })
        .await
    );
    let read = "/v1/conversations/c1/read";
    let (status, body) = app
        .call(
            Method::POST,
            read,
            Some(&json!({"userId": "ben", "upTo": "m3"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], true);
    assert_eq!(body["sendersNotified"], 2, "ada and cy");
    // ada's frames: cy's m2 as it arrived, then one receipt for her last message read.
    let mut frame = next(&mut ada).await;
    while frame["type"] == "message:new" {
        frame = next(&mut ada).await;
    }
    assert_eq!(frame["type"], "message:read", "{frame}");
    assert_eq!(frame["data"]["messageId"], "m3");
    assert_eq!(frame["data"]["userId"], "ben");
    assert_eq!(frame["data"]["conversationId"], "c1");

    // The rest of the conversation: m4 only, so ada alone is told.
    let (status, body) = app
        .call(Method::POST, read, Some(&json!({"userId": "ben"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sendersNotified"], 1);
    assert_eq!(next(&mut ada).await["data"]["messageId"], "m4");
    let (_, body) = app
        .call(Method::POST, read, Some(&json!({"userId": "ben"})))
        .await;
    assert_eq!(body["recorded"], false, "read that far already");
    assert!(quiet(&mut ada, Duration::from_millis(300)).await);

    let (status, _) = app
        .call(Method::POST, read, Some(&json!({"userId": "zed"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .call(
            Method::POST,
            read,
            Some(&json!({"userId": "ben", "upTo": "nope"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "upTo");
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/conversations/none/read",
            Some(&json!({"userId": "ben"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A single message's receipt checks membership for a message sent to the members.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/chat/messages/m4/read",
            Some(&json!({"userId": "cy"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/chat/messages/m4/read",
            Some(&json!({"userId": "zed"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}
