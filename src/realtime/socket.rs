//! The WebSocket transport of a [`session`](super::session).
//!
//! Frames to the client are JSON: `{"type": "message:new", "cursor": "42", "data": {...}}`,
//! with `{"type": "ready", "cursor": ...}` once the replay is done. From the client:
//! `{"type": "ack", "cursor": "42"}` records what it has, `{"type": "read", "messageId":
//! ...}` records a read receipt (the sender gets `message:read`), `{"type":
//! "presence:subscribe", "userIds": [...]}` sends `user:presence` frames whenever those
//! users come online or go offline, `{"type": "ping"}` is answered with `pong`,
//! `{"type": "message:send", "data": {chat message}}` sends a chat message as the token's
//! user (answered `{"type": "message:sent", "data": {...}}` or `message:error`), and
//! `{"type": "typing", "conversationId": ..., "isTyping": true}` tells the conversation's
//! other members online (`{"type": "typing", "data": {...}}`, no cursor). An intent's
//! fields may also come inside `data`. The client is pinged every heartbeat and must
//! answer (three silent ones close it).

use super::Realtime;
use super::session::{self, End, Frame, Incoming, Transport};
use crate::domain::TenantId;
use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Runs the session of `user` of `tenant` on `socket`, from `since` (else from what the
/// user acknowledged last).
pub async fn run(
    realtime: Arc<Realtime>,
    tenant: TenantId,
    user: String,
    since: Option<i64>,
    socket: WebSocket,
) {
    let (sink, stream) = socket.split();
    let timeout = realtime.settings().send_timeout;
    let transport = WebSocketTransport {
        sink,
        stream,
        timeout,
    };
    session::run(realtime, tenant, user, since, transport).await;
}

struct WebSocketTransport {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    timeout: Duration,
}

impl WebSocketTransport {
    /// Sends a message within the send timeout.
    async fn put(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(self.timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Dropped("the client did not keep up")),
        }
    }
}

/// A frame as the WebSocket's JSON.
fn render(frame: Frame) -> Value {
    match frame {
        Frame::Event { kind, cursor, data } => {
            json!({"type": kind, "cursor": cursor.to_string(), "data": data})
        }
        Frame::Presence(state) => json!({"type": "user:presence", "data": state}),
        Frame::Ready { cursor } => json!({"type": "ready", "cursor": cursor.to_string()}),
        Frame::Missed { cursor, data } => {
            json!({"type": "message:received", "cursor": cursor.to_string(), "data": data})
        }
        Frame::Ephemeral { kind, data } => json!({"type": kind, "data": data}),
        Frame::Pong => json!({"type": "pong"}),
        Frame::Error(message) => json!({"type": "error", "message": message}),
    }
}

impl Transport for WebSocketTransport {
    const ANSWERS_HEARTBEATS: bool = true;

    async fn send(&mut self, frame: Frame) -> Result<(), End> {
        self.put(Message::Text(render(frame).to_string().into()))
            .await
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        self.put(Message::Ping(Vec::new().into())).await
    }

    async fn receive(&mut self) -> Result<Incoming, End> {
        match self.stream.next().await {
            None | Some(Err(_)) => Err(End::Closed),
            Some(Ok(Message::Close(_))) => Ok(Incoming::Closing),
            Some(Ok(Message::Text(text))) => Ok(match serde_json::from_str::<Value>(&text) {
                Ok(frame) => {
                    let kind = frame["type"].as_str().unwrap_or("");
                    let fields = match &frame["data"] {
                        data @ Value::Object(_) => data,
                        _ => &frame,
                    };
                    Incoming::said(kind, fields, None)
                }
                Err(_) => Incoming::Invalid("frames must be JSON objects".into(), None),
            }),
            Some(Ok(_)) => Ok(Incoming::Heard),
        }
    }

    async fn close(&mut self) {
        // The reply is queued, not sent: flush it, so that the client sees its close
        // answered (1000), not the connection dropped (1006).
        let _ = tokio::time::timeout(self.timeout, self.sink.close()).await;
    }
}
