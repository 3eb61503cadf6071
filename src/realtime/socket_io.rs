//! The Socket.IO (v4) transport of a [`session`](super::session), at `/socket.io/`, for
//! the seeds' `socket.io-client` code: long polling, WebSocket, and the upgrade between
//! them are socketioxide's; the session is Herald's, as on the WebSocket.
//!
//! A client connects to namespace `/` with `auth: {token, since?}` (or `?token=&since=`
//! in the query, for old clients); anything else is refused with a `connect_error`. Each
//! event of the user's log is emitted under its own name with two arguments, its data and
//! `{cursor}`; `ready` follows the replay, and a watched user's presence is emitted as
//! `user:presence` and as seed 002's `user:online` / `user:offline`. The client may emit
//! `ack` (`{cursor}`), `read` (`{messageId}`), `presence:subscribe` (`{userIds}`),
//! seed 002's `user:reconnected`, answered with a `message:received` per chat message
//! past its acknowledged cursor, seed 002's `message:send` (a chat message, sent as the
//! token's user), answered with `message:sent` or `message:error`, and `typing`
//! (`{conversationId, isTyping}`), which the conversation's other members online receive
//! as `typing`. An event emitted with an acknowledgement callback also gets its outcome
//! there: `message:sent`'s data, `{status: "ok"}`, or the contract's `{error}`. Liveness
//! is Socket.IO's own ping, at Herald's heartbeat.

use super::Realtime;
use super::session::{self, End, Frame, Incoming, Reply, Transport, parse_cursor};
use crate::domain::TenantId;
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Client events waiting for the session: a client sending faster than its session acts
/// waits (its handlers do), rather than growing a queue.
const INTENTS: usize = 16;

/// The events a client may emit.
const CLIENT_EVENTS: [&str; 6] = [
    "ack",
    "read",
    "presence:subscribe",
    "user:reconnected",
    "message:send",
    "typing",
];

/// Who a connection is for, as its token said, and where it starts.
#[derive(Clone)]
struct Credentials {
    tenant: TenantId,
    user: String,
    since: Option<i64>,
}

/// The layer serving `/socket.io/` in front of the API's routes.
pub fn layer(realtime: Arc<Realtime>) -> SocketIoLayer {
    let heartbeat = realtime.settings().heartbeat;
    let (layer, io) = SocketIo::builder()
        // As on the WebSocket: pinged every heartbeat, gone after three silent ones.
        .ping_interval(heartbeat)
        .ping_timeout(heartbeat * 2)
        .max_payload(session::CLIENT_MESSAGE_MAX as u64)
        .build_layer();
    let checker = realtime.clone();
    let authenticate = move |socket: SocketRef, TryData(auth): TryData<Value>| {
        let realtime = checker.clone();
        async move {
            let credentials = credentials(&realtime, &socket, auth.unwrap_or(Value::Null))?;
            socket.extensions.insert(credentials);
            Ok::<(), String>(())
        }
    };
    let connected = move |socket: SocketRef| connect(realtime.clone(), socket);
    io.ns("/", connected.with(authenticate));
    layer
}

/// The connection's credentials from `auth` (`{token, since?}`), else from the query.
fn credentials(
    realtime: &Realtime,
    socket: &SocketRef,
    auth: Value,
) -> Result<Credentials, String> {
    let query: HashMap<String, String> =
        axum::extract::Query::try_from_uri(&socket.req_parts().uri)
            .map(|q| q.0)
            .unwrap_or_default();
    let token = auth["token"]
        .as_str()
        .or(query.get("token").map(String::as_str))
        .ok_or("a real-time token is required (auth.token)")?;
    let (tenant, user) = realtime.check(token).map_err(|e| e.to_string())?;
    let since = match &auth["since"] {
        Value::Null => query.get("since").map(|s| Value::String(s.clone())),
        since => Some(since.clone()),
    };
    let since = since
        .map(|since| {
            match &since {
                Value::String(s) => parse_cursor(s),
                Value::Number(n) => n.as_i64().filter(|c| *c >= 0),
                _ => None,
            }
            .ok_or("since must be the cursor of a frame")
        })
        .transpose()?;
    Ok(Credentials {
        tenant,
        user,
        since,
    })
}

/// Runs an authenticated connection's session.
async fn connect(realtime: Arc<Realtime>, socket: SocketRef) {
    let Some(Credentials {
        tenant,
        user,
        since,
    }) = socket.extensions.get::<Credentials>()
    else {
        return;
    };
    let (intents, incoming) = mpsc::channel(INTENTS);
    for name in CLIENT_EVENTS {
        let intents = intents.clone();
        // The intent is queued while socketioxide calls the handler, in the order the
        // events arrive, and the future it runs is empty: work inside the future is a task
        // of its own, and seed 002's `ack` then `user:reconnected` could swap, the replay
        // then starting before the acknowledgement. A client that floods past the
        // session's queue loses what does not fit, as a slow reader would, and is told so
        // in its acknowledgement callback if it gave one.
        socket.on(
            name,
            move |Event(name): Event, TryData(body): TryData<Value>, ack: AckSender| {
                let body = body.unwrap_or(Value::Null);
                // Answers the callback if the client gave one (a no-op otherwise).
                let reply = Reply::new(move |outcome| {
                    let _ = ack.send(&outcome);
                });
                if let Err(full) = intents.try_send(Incoming::said(&name, &body, Some(reply))) {
                    full.into_inner().turn_away();
                }
                std::future::ready(())
            },
        );
    }
    let gone = Arc::new(Notify::new());
    let told = gone.clone();
    socket.on_disconnect(move |_: DisconnectReason| async move { told.notify_one() });
    let transport = SocketIoTransport {
        socket: socket.clone(),
        incoming,
        gone,
        timeout: realtime.settings().send_timeout,
    };
    session::run(realtime, tenant, user, since, transport).await;
    // Ended by Herald (a client that did not keep up): tell the client.
    let _ = socket.disconnect();
}

struct SocketIoTransport {
    socket: SocketRef,
    incoming: mpsc::Receiver<Incoming>,
    gone: Arc<Notify>,
    timeout: Duration,
}

impl SocketIoTransport {
    /// Emits `event` within the send timeout: socketioxide refuses at once when the
    /// socket's buffer is full, so it is tried again until the client has taken enough.
    async fn emit<T: Serialize + ?Sized + Sync>(&self, event: &str, data: &T) -> Result<(), End> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.socket.emit(event, data) {
                Ok(()) => return Ok(()),
                Err(SendError::Socket(SocketError::InternalChannelFull))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    return Err(End::Dropped("the client did not keep up"));
                }
                Err(_) => return Err(End::Closed),
            }
        }
    }
}

impl Transport for SocketIoTransport {
    const ANSWERS_HEARTBEATS: bool = false;

    async fn send(&mut self, frame: Frame) -> Result<(), End> {
        match frame {
            Frame::Event { kind, cursor, data } => {
                let meta = json!({"cursor": cursor.to_string()});
                self.emit(&kind, &(data, meta)).await
            }
            Frame::Presence(state) => {
                self.emit("user:presence", &state).await?;
                // Seed 002's names for the same news.
                let name = if state["online"] == true {
                    "user:online"
                } else {
                    "user:offline"
                };
                let told = json!({"userId": state["userId"], "timestamp": chrono::Utc::now()});
                self.emit(name, &told).await
            }
            Frame::Ready { cursor } => {
                self.emit("ready", &json!({"cursor": cursor.to_string()}))
                    .await
            }
            Frame::Missed { cursor, data } => {
                let meta = json!({"cursor": cursor.to_string()});
                self.emit("message:received", &(data, meta)).await
            }
            Frame::Ephemeral { kind, data } => self.emit(&kind, &data).await,
            Frame::Pong => self.emit("pong", &json!({})).await,
            Frame::Error(message) => self.emit("error", &json!({"message": message})).await,
        }
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        // Socket.IO pings on its own.
        Ok(())
    }

    async fn receive(&mut self) -> Result<Incoming, End> {
        tokio::select! {
            said = self.incoming.recv() => said.ok_or(End::Closed),
            _ = self.gone.notified() => Err(End::Closed),
        }
    }
}
