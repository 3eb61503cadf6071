//! One real-time session, whatever carries it (WebSocket, Server-Sent Events, Socket.IO):
//! replay from the cursor, then live events, read from the user's log whenever the user's
//! doorbell rings; presence of watched users; heartbeats and the keep-up rules.
//!
//! The loop lives here once, in [`run`]; a transport only says how a [`Frame`] goes out,
//! what a heartbeat is on its wire and what the client said ([`Transport`]). So every
//! transport counts its connections into presence the same way, replays the same way and
//! drops a client that does not keep up (a [`Transport::send`] that times out) the same
//! way: memory per connection stays one batch of the log, and the client catches up by
//! replay when it comes back.

use super::{Realtime, presence_key, user_key};
use crate::domain::TenantId;
use crate::store::ReadReceipt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// Events read from the log at a time.
const BATCH: i64 = 256;

/// Most users one connection may watch the presence of.
const WATCH_MAX: usize = 1000;

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The client closed it or went away.
    Closed,
    /// The client did not keep up or went silent.
    Dropped(&'static str),
    /// The store failed.
    Store(String),
}

impl From<crate::store::StoreError> for End {
    fn from(e: crate::store::StoreError) -> Self {
        End::Store(e.to_string())
    }
}

/// What a session sends its client; each transport puts it on its own wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// An event of the user's log (`message:new`, `notification:read`, ...).
    Event {
        /// Its kind, the event's name on every transport.
        kind: String,
        /// Its place in the log: what the client resumes from.
        cursor: i64,
        /// Its data.
        data: Value,
    },
    /// A watched user came online or went offline: `{userId, online, lastSeen}`.
    Presence(Value),
    /// The replay is done; live events follow.
    Ready {
        /// Where the session stands.
        cursor: i64,
    },
    /// A chat message sent again because the client asked for what it missed since its
    /// last acknowledgement (seed 002's `user:reconnected`).
    Missed {
        /// Its place in the log.
        cursor: i64,
        /// The message.
        data: Value,
    },
    /// The answer to the client's ping.
    Pong,
    /// Why the client's last intent was not acted on.
    Error(String),
}

/// What a client asks of its session.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// It has everything up to this cursor: a session opened without one resumes after it.
    Ack(i64),
    /// It read this message: a read receipt goes to the sender.
    Read(String),
    /// Tell it whenever these users come online or go offline.
    Watch(Vec<String>),
    /// Answer with [`Frame::Pong`].
    Ping,
    /// Send again, as [`Frame::Missed`], the chat messages past its acknowledged cursor.
    Reconnected,
}

impl Intent {
    /// The intent named `kind` with `body`'s fields (`cursor`, `messageId`, `userIds`), or
    /// what to tell the client about it.
    pub fn parse(kind: &str, body: &Value) -> Result<Intent, String> {
        match kind {
            "ack" => {
                let cursor = match &body["cursor"] {
                    Value::String(s) => s.parse::<i64>().ok(),
                    Value::Number(n) => n.as_i64(),
                    _ => None,
                };
                cursor
                    .map(Intent::Ack)
                    .ok_or_else(|| "ack needs the cursor of a frame".to_owned())
            }
            "read" => body["messageId"]
                .as_str()
                .map(|id| Intent::Read(id.to_owned()))
                .ok_or_else(|| "read needs a messageId".to_owned()),
            "presence:subscribe" => {
                let users: Option<Vec<String>> = body["userIds"].as_array().map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect()
                });
                match users {
                    Some(users) if !users.is_empty() && users.len() <= WATCH_MAX => {
                        Ok(Intent::Watch(users))
                    }
                    _ => Err(format!(
                        "presence:subscribe needs userIds: 1 to {WATCH_MAX} user ids"
                    )),
                }
            }
            "ping" => Ok(Intent::Ping),
            "user:reconnected" => Ok(Intent::Reconnected),
            other => Err(format!(
                "unknown frame type {other:?}; expected ack, read, presence:subscribe or ping"
            )),
        }
    }
}

/// A cursor as clients write it (`?since=`, `Last-Event-ID`, `auth.since`): a whole
/// number from 0.
pub fn parse_cursor(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|c| *c >= 0)
}

/// What a transport heard from its client.
#[derive(Debug)]
pub enum Incoming {
    /// Something to act on.
    Intent(Intent),
    /// Something that is no intent; the client is told why.
    Invalid(String),
    /// A sign of life and nothing more (a pong).
    Heard,
    /// The client is closing: [`Transport::close`] answers it, and the session ends.
    Closing,
}

/// How a session's frames reach its client, and what the client says back.
///
/// Each method's future must be cancel-safe where [`run`] races it (`receive`): the
/// session waits for the client, its doorbell and its heartbeat at once.
pub trait Transport: Send {
    /// Whether the client answers heartbeats, so that three silent ones mean it is gone
    /// (WebSocket pongs). A transport whose client never speaks (SSE), or whose own
    /// protocol watches liveness (Socket.IO's pings), says no.
    const ANSWERS_HEARTBEATS: bool;

    /// Sends `frame`, within `realtime.send_timeout`, else ends with [`End::Dropped`].
    fn send(&mut self, frame: Frame) -> impl Future<Output = Result<(), End>> + Send;

    /// What a heartbeat is on this wire (a ping, a comment, nothing).
    fn heartbeat(&mut self) -> impl Future<Output = Result<(), End>> + Send;

    /// What the client says next; [`End::Closed`] once it is gone.
    fn receive(&mut self) -> impl Future<Output = Result<Incoming, End>> + Send;

    /// Answers the client's close.
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs the session of `user` of `tenant` over `transport`, from `since` (else from what
/// the user acknowledged last), counting the connection into presence while it lasts.
pub async fn run<T: Transport>(
    realtime: Arc<Realtime>,
    tenant: TenantId,
    user: String,
    since: Option<i64>,
    transport: T,
) {
    realtime.count_connection(&tenant, &user, 1).await;
    let session = Session {
        realtime: &realtime,
        tenant: &tenant,
        user: &user,
        watching: HashMap::new(),
    };
    let Err(ended) = session.serve(since, transport).await;
    realtime.count_connection(&tenant, &user, -1).await;
    match ended {
        End::Dropped(why) => tracing::info!(%tenant, user, why, "real-time connection dropped"),
        End::Store(e) => {
            tracing::warn!(%tenant, user, error = %e, "real-time connection ended on a store error")
        }
        End::Closed => {}
    }
}

/// A session's state between frames.
struct Session<'a> {
    realtime: &'a Arc<Realtime>,
    tenant: &'a TenantId,
    user: &'a str,
    /// Users whose presence this client watches, with what it was last told.
    watching: HashMap<String, Value>,
}

impl Session<'_> {
    async fn serve<T: Transport>(
        mut self,
        since: Option<i64>,
        mut transport: T,
    ) -> Result<Infallible, End> {
        let realtime = self.realtime;
        // Join before reading the log: a poke from now on is not missed.
        let membership = realtime
            .hub
            .join(user_key(self.tenant.as_str(), self.user))
            .await;
        let store = realtime.log().clone();
        let settings = realtime.settings().clone();
        let mut cursor = match since {
            Some(cursor) => cursor,
            None => store.acknowledged(self.tenant, self.user).await?,
        };
        let mut heartbeat = tokio::time::interval(settings.heartbeat);
        heartbeat.tick().await;
        let mut last_heard = Instant::now();
        let mut ready = false;
        let mut watch_memberships = Vec::new();
        loop {
            // Everything in the log past the cursor, in order.
            loop {
                let events = store
                    .events_after(self.tenant, self.user, cursor, BATCH)
                    .await?;
                let full = events.len() as i64 == BATCH;
                for event in events {
                    let data = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                    transport
                        .send(Frame::Event {
                            kind: event.kind,
                            cursor: event.cursor,
                            data,
                        })
                        .await?;
                    cursor = event.cursor;
                }
                if !full {
                    break;
                }
            }
            self.tell_presence(&mut transport).await?;
            if !ready {
                ready = true;
                transport.send(Frame::Ready { cursor }).await?;
            }
            tokio::select! {
                _ = membership.doorbell().notify.notified() => {}
                _ = heartbeat.tick() => {
                    if T::ANSWERS_HEARTBEATS && last_heard.elapsed() > settings.heartbeat * 3 {
                        return Err(End::Dropped("the client went silent"));
                    }
                    transport.heartbeat().await?;
                }
                incoming = transport.receive() => {
                    last_heard = Instant::now();
                    match incoming? {
                        Incoming::Heard => {}
                        Incoming::Closing => {
                            transport.close().await;
                            return Err(End::Closed);
                        }
                        Incoming::Invalid(why) => transport.send(Frame::Error(why)).await?,
                        Incoming::Intent(Intent::Watch(users)) => {
                            for watched in users {
                                if self.watching.contains_key(&watched) {
                                    continue;
                                }
                                let key = presence_key(self.tenant.as_str(), &watched);
                                let doorbell = membership.doorbell().clone();
                                watch_memberships.push(realtime.hub.join_with(key, doorbell).await);
                                self.watching.insert(watched, Value::Null);
                            }
                            // Tell the current state at once.
                            membership.doorbell().notify.notify_one();
                        }
                        Incoming::Intent(Intent::Reconnected) => {
                            self.resend_missed(cursor, &mut transport).await?;
                        }
                        Incoming::Intent(intent) => {
                            if let Some(answer) = self.act(intent).await {
                                transport.send(answer).await?;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Tells the client which watched users came or went since it was last told (and, for
    /// users it has just asked about, where they are).
    async fn tell_presence<T: Transport>(&mut self, transport: &mut T) -> Result<(), End> {
        if self.watching.is_empty() {
            return Ok(());
        }
        let users: Vec<&str> = self.watching.keys().map(String::as_str).collect();
        let now = self.realtime.presence(self.tenant, &users).await?;
        for presence in now {
            let state = json!({
                "userId": presence.user_id, "online": presence.online,
                "lastSeen": presence.last_seen,
            });
            // Told when the user comes or goes, not each time its connections are seen
            // alive.
            let known = self.watching.get(&presence.user_id).map(|s| &s["online"]);
            if known != Some(&state["online"]) {
                self.watching.insert(presence.user_id, state.clone());
                transport.send(Frame::Presence(state)).await?;
            }
        }
        Ok(())
    }

    /// Sends again the chat messages past the user's acknowledged cursor, up to `upto`
    /// (what this session has sent), a batch of the log at a time.
    async fn resend_missed<T: Transport>(&self, upto: i64, transport: &mut T) -> Result<(), End> {
        let store = self.realtime.log();
        let mut after = store.acknowledged(self.tenant, self.user).await?;
        while after < upto {
            let events = store
                .events_after(self.tenant, self.user, after, BATCH)
                .await?;
            let full = events.len() as i64 == BATCH;
            for event in events {
                if event.cursor > upto {
                    return Ok(());
                }
                after = event.cursor;
                if event.kind == "message:new" {
                    let data = serde_json::from_str(&event.payload).unwrap_or(Value::Null);
                    let cursor = event.cursor;
                    transport.send(Frame::Missed { cursor, data }).await?;
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Acts on an acknowledgement, a read or a ping; answers what the client should know.
    async fn act(&self, intent: Intent) -> Option<Frame> {
        let error = |message: String| Some(Frame::Error(message));
        match intent {
            Intent::Ack(cursor) => {
                let acknowledged = self
                    .realtime
                    .log()
                    .acknowledge(self.tenant, self.user, cursor)
                    .await;
                match acknowledged {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "recording an acknowledgement failed");
                        error("the acknowledgement was not recorded; send it again".into())
                    }
                }
            }
            Intent::Read(message_id) => {
                match self
                    .realtime
                    .read(self.tenant, &message_id, self.user)
                    .await
                {
                    Ok(ReadReceipt::UnknownMessage) => error(format!("no message {message_id}")),
                    Ok(ReadReceipt::NotARecipient) => {
                        error(format!("message {message_id} was not sent to you"))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "recording a read receipt failed");
                        error("the read receipt was not recorded; send it again".into())
                    }
                }
            }
            Intent::Ping => Some(Frame::Pong),
            // Handled by the loop, which holds what they change.
            Intent::Watch(_) | Intent::Reconnected => None,
        }
    }
}
