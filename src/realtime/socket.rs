//! One WebSocket session: replay from the cursor, then live events, read from the user's
//! log whenever the user's doorbell rings.
//!
//! Frames to the client are JSON: `{"type": "message:new", "cursor": "42", "data": {...}}`,
//! with `{"type": "ready", "cursor": ...}` once the replay is done. From the client:
//! `{"type": "ack", "cursor": "42"}` records what it has, `{"type": "read", "messageId":
//! ...}` records a read receipt (the sender gets `message:read`), `{"type":
//! "presence:subscribe", "userIds": [...]}` sends `user:presence` frames whenever those
//! users come online or go offline, and `{"type": "ping"}` is answered with `pong`. A client that does not take a frame within `realtime.send_timeout`, or is
//! silent for three heartbeats, is disconnected: memory per connection stays one batch of
//! the log, and the client catches up by replay when it comes back.

use super::{Realtime, presence_key, user_key};
use crate::domain::TenantId;
use crate::store::ReadReceipt;
use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Events read from the log at a time.
const BATCH: i64 = 256;

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client closed it or went away.
    Closed,
    /// The client did not keep up or went silent.
    Dropped(&'static str),
    /// The store failed.
    Store(String),
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Sends a message within `timeout`.
async fn send(sink: &mut Sink, message: Message, timeout: std::time::Duration) -> Result<(), End> {
    match tokio::time::timeout(timeout, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Closed),
        Err(_) => Err(End::Dropped("the client did not keep up")),
    }
}

fn text(frame: Value) -> Message {
    Message::Text(frame.to_string().into())
}

/// Runs the session of `user` of `tenant` on `socket`, from `since` (else from what the
/// user acknowledged last).
pub async fn run(
    realtime: Arc<Realtime>,
    tenant: TenantId,
    user: String,
    since: Option<i64>,
    socket: WebSocket,
) {
    realtime.count_connection(&tenant, &user, 1).await;
    let ended = session(&realtime, &tenant, &user, since, socket).await;
    realtime.count_connection(&tenant, &user, -1).await;
    match ended {
        End::Dropped(why) => tracing::info!(%tenant, user, why, "real-time connection dropped"),
        End::Store(e) => {
            tracing::warn!(%tenant, user, error = %e, "real-time connection ended on a store error")
        }
        End::Closed => {}
    }
}

async fn session(
    realtime: &Arc<Realtime>,
    tenant: &TenantId,
    user: &str,
    since: Option<i64>,
    socket: WebSocket,
) -> End {
    let (mut sink, mut stream) = socket.split();
    // Join before reading the log: a poke from now on is not missed.
    let membership = realtime.hub.join(user_key(tenant.as_str(), user)).await;
    let store = realtime.log().clone();
    let settings = realtime.settings().clone();
    let mut cursor = match since {
        Some(cursor) => cursor,
        None => match store.acknowledged(tenant, user).await {
            Ok(cursor) => cursor,
            Err(e) => return End::Store(e.to_string()),
        },
    };
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.tick().await;
    let mut last_heard = Instant::now();
    let mut ready = false;
    // Users whose presence this client watches, with what it was last told.
    let mut watching: HashMap<String, Value> = HashMap::new();
    let mut watch_memberships = Vec::new();
    loop {
        // Everything in the log past the cursor, in order.
        loop {
            let events = match store.events_after(tenant, user, cursor, BATCH).await {
                Ok(events) => events,
                Err(e) => return End::Store(e.to_string()),
            };
            let full = events.len() as i64 == BATCH;
            for event in events {
                let data: Value = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                let frame =
                    json!({"type": event.kind, "cursor": event.cursor.to_string(), "data": data});
                if let Err(end) = send(&mut sink, text(frame), settings.send_timeout).await {
                    return end;
                }
                cursor = event.cursor;
            }
            if !full {
                break;
            }
        }
        if !watching.is_empty() {
            let users: Vec<&str> = watching.keys().map(String::as_str).collect();
            let now = match realtime.presence(tenant, &users).await {
                Ok(now) => now,
                Err(e) => return End::Store(e.to_string()),
            };
            for presence in now {
                let state = json!({
                    "userId": presence.user_id, "online": presence.online,
                    "lastSeen": presence.last_seen,
                });
                // Told when the user comes or goes, not each time its connections are
                // seen alive.
                let known = watching.get(&presence.user_id).map(|s| &s["online"]);
                if known != Some(&state["online"]) {
                    let frame = json!({"type": "user:presence", "data": state});
                    watching.insert(presence.user_id, state);
                    if let Err(end) = send(&mut sink, text(frame), settings.send_timeout).await {
                        return end;
                    }
                }
            }
        }
        if !ready {
            ready = true;
            let frame = json!({"type": "ready", "cursor": cursor.to_string()});
            if let Err(end) = send(&mut sink, text(frame), settings.send_timeout).await {
                return end;
            }
        }
        tokio::select! {
            _ = membership.doorbell().notify.notified() => {}
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > settings.heartbeat * 3 {
                    return End::Dropped("the client went silent");
                }
                let ping = Message::Ping(Vec::new().into());
                if let Err(end) = send(&mut sink, ping, settings.send_timeout).await {
                    return end;
                }
            }
            message = stream.next() => {
                last_heard = Instant::now();
                match message {
                    None | Some(Err(_)) => return End::Closed,
                    Some(Ok(Message::Close(_))) => {
                        // The reply is queued, not sent: flush it, so that the client
                        // sees its close answered (1000), not the connection dropped (1006).
                        let _ = tokio::time::timeout(settings.send_timeout, sink.close()).await;
                        return End::Closed;
                    }
                    Some(Ok(Message::Text(frame))) => {
                        match client_frame(realtime, tenant, user, &frame).await {
                            Action::Nothing => {}
                            Action::Answer(answer) => {
                                if let Err(end) = send(&mut sink, text(answer), settings.send_timeout).await {
                                    return end;
                                }
                            }
                            Action::Watch(users) => {
                                for watched in users {
                                    if watching.contains_key(&watched) {
                                        continue;
                                    }
                                    let key = presence_key(tenant.as_str(), &watched);
                                    let doorbell = membership.doorbell().clone();
                                    watch_memberships.push(realtime.hub.join_with(key, doorbell).await);
                                    watching.insert(watched, Value::Null);
                                }
                                // Tell the current state at once.
                                membership.doorbell().notify.notify_one();
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// Most users one connection may watch the presence of.
const WATCH_MAX: usize = 1000;

/// What a client's frame asks for.
enum Action {
    Nothing,
    Answer(Value),
    Watch(Vec<String>),
}

fn error(message: impl Into<String>) -> Action {
    Action::Answer(json!({"type": "error", "message": message.into()}))
}

/// Handles a frame from the client.
async fn client_frame(realtime: &Realtime, tenant: &TenantId, user: &str, text: &str) -> Action {
    let frame: Value = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(_) => return error("frames must be JSON objects"),
    };
    match frame["type"].as_str() {
        Some("ack") => {
            let cursor = match &frame["cursor"] {
                Value::String(s) => s.parse::<i64>().ok(),
                Value::Number(n) => n.as_i64(),
                _ => None,
            };
            let Some(cursor) = cursor else {
                return error("ack needs the cursor of a frame");
            };
            match realtime.log().acknowledge(tenant, user, cursor).await {
                Ok(()) => Action::Nothing,
                Err(e) => {
                    tracing::warn!(error = %e, "recording an acknowledgement failed");
                    error("the acknowledgement was not recorded; send it again")
                }
            }
        }
        Some("read") => {
            let Some(message_id) = frame["messageId"].as_str() else {
                return error("read needs a messageId");
            };
            match realtime.read(tenant, message_id, user).await {
                Ok(ReadReceipt::UnknownMessage) => error(format!("no message {message_id}")),
                Ok(ReadReceipt::NotARecipient) => {
                    error(format!("message {message_id} was not sent to you"))
                }
                Ok(_) => Action::Nothing,
                Err(e) => {
                    tracing::warn!(error = %e, "recording a read receipt failed");
                    error("the read receipt was not recorded; send it again")
                }
            }
        }
        Some("presence:subscribe") => {
            let users: Option<Vec<String>> = frame["userIds"].as_array().map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect()
            });
            match users {
                Some(users) if !users.is_empty() && users.len() <= WATCH_MAX => {
                    Action::Watch(users)
                }
                _ => error(format!(
                    "presence:subscribe needs userIds: 1 to {WATCH_MAX} user ids"
                )),
            }
        }
        Some("ping") => Action::Answer(json!({"type": "pong"})),
        other => error(format!(
            "unknown frame type {:?}; expected ack, read, presence:subscribe or ping",
            other.unwrap_or("")
        )),
    }
}
