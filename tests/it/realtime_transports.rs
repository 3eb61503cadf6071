//! The real-time transports beside the WebSocket, each running the same session: Server-
//! Sent Events read raw and through an `EventSource` (the eventsource package) whose
//! connection is cut, and Socket.IO through the seeds' own client (socket.io-client v4,
//! tests/seeds/realtime.mjs), over long polling and with the upgrade to WebSocket.

use crate::support::seeds::{realtime_client, seed_clients};
use crate::support::socket::token;
use crate::support::{self, TestApp};
use herald::app::Roles;
use herald::config::BrokerKind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

async fn post(app: &TestApp, id: &str, user: &str, content: &str) {
    let message = json!({
        "messageId": id, "conversationId": "c1", "senderId": "ada",
        "recipientIds": [user], "content": content, "messageType": "text",
        "timestamp": "2026-11-23T10:00:00Z",
    });
    let (status, body) = app
        .call(Method::POST, "/v1/chat/messages", Some(&message))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// Waits until `user`'s log holds `count` events.
async fn stored(app: &TestApp, user: &str, count: usize) {
    let tenant = herald::domain::TenantId::parse("1").unwrap();
    let done = support::eventually(Duration::from_secs(10), || async {
        let events = app.herald.store.events_after(&tenant, user, 0, 100).await;
        events.unwrap().len() == count
    })
    .await;
    assert!(done, "{user}'s log holds {count} events");
}

/// An SSE event as read off the wire.
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

/// A raw reader of an SSE response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// The next event (comments skipped), within 10 s.
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("event", v)) => event.event = v.trim_start().to_owned(),
                        Some(("id", v)) => event.id = Some(v.trim_start().to_owned()),
                        Some(("data", v)) => {
                            event.data = serde_json::from_str(v.trim_start()).unwrap()
                        }
                        _ => {}
                    }
                }
                if !event.event.is_empty() {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream stays open")
                .expect("the stream goes on");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The events up to `ready`, and the cursor `ready` carries as its id.
    async fn until_ready(&mut self) -> (Vec<SseEvent>, String) {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            if event.event == "ready" {
                return (events, event.id.expect("ready carries the cursor"));
            }
            events.push(event);
        }
    }
}

async fn open_sse(app: &TestApp, token: &str, last_event_id: Option<&str>) -> SseReader {
    let mut request = app
        .client
        .get(format!("{}/v1/realtime/sse?token={token}", app.address));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    SseReader {
        response,
        buffer: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_names_events_by_type_with_their_cursor_and_resumes_from_last_event_id() {
    let app = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::everything(),
        &[("realtime.heartbeat", "300ms")],
    )
    .await;
    let bob = token(&app, "bob").await;
    let response = app.get("/v1/realtime/sse?token=forged.token").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .get(&format!("/v1/realtime/sse?token={bob}&since=-1"))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mut stream = open_sse(&app, &bob, None).await;
    let (replayed, _) = stream.until_ready().await;
    assert!(replayed.is_empty());
    // Bob counts as online while his stream is open, as with a WebSocket.
    let (_, now) = app
        .call(Method::GET, "/v1/presence?userIds=bob", None)
        .await;
    assert_eq!(now["users"][0]["online"], true);
    post(&app, "e0", "bob", "before").await;
    let first = stream.next().await;
    assert_eq!(first.event, "message:new");
    assert_eq!(first.data["content"], "before");
    let cursor = first.id.expect("a log event carries its cursor as its id");
    // Heartbeats keep it open; comments are not events.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(stream);

    for (i, content) in ["one", "two", "three"].iter().enumerate() {
        post(&app, &format!("e{}", i + 1), "bob", content).await;
    }
    stored(&app, "bob", 4).await;
    let offline = support::eventually(Duration::from_secs(5), || async {
        let (_, now) = app
            .call(Method::GET, "/v1/presence?userIds=bob", None)
            .await;
        now["users"][0]["online"] == false
    })
    .await;
    assert!(offline, "a closed stream counts the connection out");

    let mut stream = open_sse(&app, &bob, Some(&cursor)).await;
    let (missed, at) = stream.until_ready().await;
    let contents: Vec<&str> = missed
        .iter()
        .map(|e| e.data["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["one", "two", "three"], "exactly what it missed");
    assert_eq!(Some(&at), missed[2].id.as_ref());
    post(&app, "e4", "bob", "live").await;
    assert_eq!(stream.next().await.data["content"], "live");
    // An open stream would hold graceful shutdown (see the report: not yet tied to it).
    drop(stream);
    app.stop().await;
}

/// What a socket.io-client saw: its first message, then what it missed, then seed 002's
/// `message:received` for everything past its acknowledgement.
async fn socket_io_scenario(transports: Option<&[&str]>, expected_transport: &str) {
    let Some(seeds) = seed_clients() else { return };
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let mut config = json!({
        "base": app.address, "key": app.key, "token": token(&app, "sio").await, "user": "sio",
    });
    if let Some(transports) = transports {
        config["transports"] = json!(transports);
    }
    let seen = realtime_client(&seeds, "socketio", &config).await;
    assert_eq!(seen["first"]["content"], "before", "{seen}");
    assert_eq!(seen["first"]["transport"], expected_transport, "{seen}");
    let missed: Vec<&str> = seen["missed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        missed,
        ["one", "two", "three"],
        "exactly what it missed: {seen}"
    );
    assert_eq!(seen["received"], json!(["one", "two", "three"]), "{seen}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_io_client_on_long_polling_gets_live_messages_and_exactly_what_it_missed() {
    socket_io_scenario(Some(&["polling"]), "polling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_io_client_that_upgrades_to_websocket_gets_live_messages_and_what_it_missed() {
    socket_io_scenario(None, "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_io_client_with_a_bad_token_gets_a_connect_error() {
    let Some(seeds) = seed_clients() else { return };
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let config = json!({"base": app.address, "token": "forged.token"});
    let seen = realtime_client(&seeds, "refused", &config).await;
    assert_eq!(seen["event"], "connect_error", "{seen}");
    assert_eq!(seen["message"], "the token is not valid", "{seen}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_whose_connection_is_cut_resumes_by_itself_with_no_gap_and_no_duplicate() {
    let Some(seeds) = seed_clients() else { return };
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let config = json!({
        "base": app.address, "key": app.key, "token": token(&app, "es").await, "user": "es",
    });
    let seen = realtime_client(&seeds, "eventsource", &config).await;
    let news = seen["news"].as_array().unwrap();
    let contents: Vec<&str> = news
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["before", "one", "two", "three", "live"],
        "{seen}"
    );
    let missed = &seen["missed"];
    assert_eq!(missed, &json!(news[1..4]), "exactly what it missed: {seen}");
    let ids: Vec<i64> = news
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.is_sorted_by(|a, b| a < b), "{seen}");
    // The EventSource's own reconnection asked for what followed the last event it had.
    let last_had = &news[0]["id"];
    assert_eq!(
        seen["requests"],
        json!([{"lastEventId": null}, {"lastEventId": last_had}]),
        "{seen}"
    );
    assert_eq!(seen["readies"].as_array().unwrap().len(), 2, "{seen}");
    app.stop().await;
}
