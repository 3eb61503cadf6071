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
//!
//! A client may also send: a chat message (`message:send`) goes through the same ingress
//! as HTTP ([`ChatSends`]), a few at a time per connection, answered with `message:sent`
//! or `message:error`; a typing indicator (`typing`) goes to the conversation's other
//! members online as a signal (see [`Hub`](super::Hub)), throttled, never stored.

use super::{Realtime, presence_key, user_key};
use crate::domain::TenantId;
use crate::store::ReadReceipt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Events read from the log at a time.
const BATCH: i64 = 256;

/// Most users one connection may watch the presence of.
const WATCH_MAX: usize = 1000;

/// The largest message a client may send on any transport: a chat message's content is at
/// most 65,536 characters, which may take four bytes each, and its other fields are small.
pub const CLIENT_MESSAGE_MAX: usize = 320 * 1024;

/// Chat messages one connection may have on their way through the ingress at once; one
/// more is refused until an answer comes back, so a client cannot queue work without
/// bound.
const SENDS_IN_FLIGHT: usize = 8;

/// A typing indicator goes out at most this often per conversation and typer; a stop
/// always goes (once, after a start).
const TYPING_EVERY: Duration = Duration::from_secs(1);

/// Conversations one connection may be typing in at once.
const TYPING_MAX: usize = 64;

/// Members a typing indicator goes to at most: in a larger conversation it is not passed
/// on (one typer would cost thousands of bus messages a second).
const TYPING_AUDIENCE_MAX: usize = 1000;

/// Where a client's chat messages go: the ingress, as over HTTP. Implemented at the API's
/// edge, which knows the event documents and the contract's error shape.
#[async_trait::async_trait]
pub trait ChatSends: Send + Sync {
    /// Sends `message` as `sender` of `tenant` (the token's user, whatever the message
    /// says); answers what `message:sent` carries (`messageId`, `conversationId`, `id`,
    /// `status`), or the refusal in the contract's error shape (`{"error": {...}}`).
    async fn send_chat(
        &self,
        tenant: &TenantId,
        sender: &str,
        message: Value,
    ) -> Result<Value, Value>;
}

/// A transport's own way to answer one intent, besides the session's frames: Socket.IO's
/// acknowledgement callback, called with the outcome (or `{"error": ...}`).
pub struct Reply(Box<dyn FnOnce(Value) + Send>);

impl Reply {
    /// A reply that calls `answer`.
    pub fn new(answer: impl FnOnce(Value) + Send + 'static) -> Self {
        Reply(Box::new(answer))
    }

    fn answer(self, value: Value) {
        (self.0)(value)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
}

/// Why an intent was not acted on, in the contract's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The contract's error code (`validation_failed`, `forbidden`, `not_found`, ...).
    pub code: &'static str,
    /// A sentence for the client.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The store failed while `doing`: logged with its cause, told without it.
    fn unavailable(doing: &str, cause: &crate::store::StoreError) -> Self {
        tracing::warn!(error = %cause, "{doing} failed");
        Refusal::new(
            "queue_unavailable",
            format!("{doing} failed on our side; try again"),
        )
    }

    /// The contract's error body.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": []}})
    }
}

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
    /// Something for the client now that is not in its log (`typing`, `message:sent`,
    /// `message:error`): no cursor, never replayed.
    Ephemeral {
        /// Its name on every transport.
        kind: String,
        /// Its data.
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
    /// Send this chat message, from the token's user.
    Send(Value),
    /// Tell the conversation's other members online that the user is (or stopped) typing.
    Typing {
        /// The conversation.
        conversation: String,
        /// Whether the user is typing now.
        typing: bool,
    },
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
            "message:send" if body.is_object() => Ok(Intent::Send(body.clone())),
            "message:send" => Err("message:send needs a chat message (an object)".to_owned()),
            "typing" => {
                let conversation = body["conversationId"]
                    .as_str()
                    .or(body["chatId"].as_str())
                    .filter(|c| !c.is_empty())
                    .ok_or("typing needs a conversationId")?;
                let typing = match &body["isTyping"] {
                    Value::Null => true,
                    Value::Bool(typing) => *typing,
                    _ => return Err("isTyping must be true or false".to_owned()),
                };
                Ok(Intent::Typing {
                    conversation: conversation.to_owned(),
                    typing,
                })
            }
            other => Err(format!(
                "unknown frame type {other:?}; expected ack, read, presence:subscribe, ping, \
                 user:reconnected, message:send or typing"
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
    /// Something to act on, and the transport's own way to answer it, if it has one.
    Intent(Intent, Option<Reply>),
    /// Something that is no intent; the client is told why.
    Invalid(String, Option<Reply>),
    /// A sign of life and nothing more (a pong).
    Heard,
    /// The client is closing: [`Transport::close`] answers it, and the session ends.
    Closing,
}

impl Incoming {
    /// The intent `kind` with `body`, or why it is none, answered by `reply` if given.
    pub fn said(kind: &str, body: &Value, reply: Option<Reply>) -> Incoming {
        match Intent::parse(kind, body) {
            Ok(intent) => Incoming::Intent(intent, reply),
            Err(why) => Incoming::Invalid(why, reply),
        }
    }

    /// Tells the client, through its reply if it gave one, that this was not taken: it
    /// sent faster than its session acts.
    pub fn turn_away(self) {
        if let Incoming::Intent(_, Some(reply)) | Incoming::Invalid(_, Some(reply)) = self {
            let refusal = Refusal::new(
                "rate_limited",
                "this connection sent faster than it is answered; send again more slowly",
            );
            reply.answer(refusal.body());
        }
    }
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
        sends: JoinSet::new(),
        typing: HashMap::new(),
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

/// A send on its way through the ingress: its outcome, and who else to tell.
type Sending = (Result<Value, Value>, Option<Reply>);

/// A session's state between frames.
struct Session<'a> {
    realtime: &'a Arc<Realtime>,
    tenant: &'a TenantId,
    user: &'a str,
    /// Users whose presence this client watches, with what it was last told.
    watching: HashMap<String, Value>,
    /// The client's chat messages on their way through the ingress.
    sends: JoinSet<Sending>,
    /// Per conversation, when the client's typing was last passed on and whether it said
    /// it was typing.
    typing: HashMap<String, (Instant, bool)>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // A send under way when the client leaves still ends where it would have (queued
        // or refused): cutting it short midway would leave its idempotency key claimed
        // until the claim expires. Its answer is lost; the client sends again with the
        // same messageId and is answered from the key.
        self.sends.detach_all();
    }
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
            for signal in membership.doorbell().take_signals() {
                if let Some(frame) = signalled(&signal) {
                    transport.send(frame).await?;
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
                Some(sent) = self.sends.join_next(), if !self.sends.is_empty() => {
                    let Ok((outcome, reply)) = sent else { continue };
                    let (kind, data) = match outcome {
                        Ok(sent) => ("message:sent", sent),
                        Err(refused) => ("message:error", refused),
                    };
                    if let Some(reply) = reply {
                        reply.answer(data.clone());
                    }
                    transport.send(Frame::Ephemeral { kind: kind.to_owned(), data }).await?;
                }
                incoming = transport.receive() => {
                    last_heard = Instant::now();
                    match incoming? {
                        Incoming::Heard => {}
                        Incoming::Closing => {
                            transport.close().await;
                            return Err(End::Closed);
                        }
                        Incoming::Invalid(why, reply) => {
                            let refusal = Refusal::new("validation_failed", why);
                            self.refuse(refusal, reply, &mut transport).await?;
                        }
                        Incoming::Intent(Intent::Watch(users), reply) => {
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
                            done(reply);
                        }
                        Incoming::Intent(Intent::Reconnected, reply) => {
                            self.resend_missed(cursor, &mut transport).await?;
                            done(reply);
                        }
                        Incoming::Intent(Intent::Send(message), reply) => {
                            self.send(message, reply, &mut transport).await?;
                        }
                        Incoming::Intent(intent, reply) => match self.act(intent).await {
                            Ok(Some(answer)) => transport.send(answer).await?,
                            Ok(None) => done(reply),
                            Err(refusal) => self.refuse(refusal, reply, &mut transport).await?,
                        },
                    }
                }
            }
        }
    }

    /// Tells the client why its intent was not acted on: an `error` frame, and its reply.
    async fn refuse<T: Transport>(
        &self,
        refusal: Refusal,
        reply: Option<Reply>,
        transport: &mut T,
    ) -> Result<(), End> {
        if let Some(reply) = reply {
            reply.answer(refusal.body());
        }
        transport.send(Frame::Error(refusal.message)).await
    }

    /// Starts sending the client's chat message through the ingress; its answer comes
    /// back through [`Session::sends`]. Refused at once when too many are under way.
    async fn send<T: Transport>(
        &mut self,
        message: Value,
        reply: Option<Reply>,
        transport: &mut T,
    ) -> Result<(), End> {
        let Some(sends) = self.realtime.chat_sends() else {
            let refusal = Refusal::new(
                "queue_unavailable",
                "this instance does not accept chat messages from sockets",
            );
            return self.refuse(refusal, reply, transport).await;
        };
        if self.sends.len() >= SENDS_IN_FLIGHT {
            let refusal = Refusal::new(
                "rate_limited",
                format!(
                    "{SENDS_IN_FLIGHT} chat messages from this connection are waiting for \
                     their answers; send more once message:sent answers one"
                ),
            );
            return self.refuse(refusal, reply, transport).await;
        }
        let (tenant, user) = (self.tenant.clone(), self.user.to_owned());
        self.sends.spawn(async move {
            let sent = sends.send_chat(&tenant, &user, message).await;
            (sent, reply)
        });
        Ok(())
    }

    /// Passes the client's typing on to the conversation's other members online, at most
    /// once per [`TYPING_EVERY`] while it goes on typing.
    async fn typing(&mut self, conversation: String, typing: bool) -> Result<(), Refusal> {
        let now = Instant::now();
        match self.typing.get(&conversation) {
            // Still typing, told recently: nothing new.
            Some((told, true)) if typing && now.duration_since(*told) < TYPING_EVERY => {
                return Ok(());
            }
            // A stop with no start before it (or a second stop): nothing to take back.
            Some((_, false)) | None if !typing => return Ok(()),
            _ => {}
        }
        if !self.typing.contains_key(&conversation) && self.typing.len() >= TYPING_MAX {
            self.typing.retain(|_, (told, typing)| {
                *typing && now.duration_since(*told) < TYPING_EVERY * 5
            });
            if self.typing.len() >= TYPING_MAX {
                return Err(Refusal::new(
                    "rate_limited",
                    format!("typing in more than {TYPING_MAX} conversations at once"),
                ));
            }
        }
        let realtime = self.realtime;
        if !realtime
            .is_member(self.tenant, &conversation, self.user)
            .await
            .map_err(|e| Refusal::unavailable("reading the conversation's members", &e))?
        {
            return Err(Refusal::new(
                "forbidden",
                format!("you are not a member of conversation {conversation}"),
            ));
        }
        let signal = json!({
            "type": "typing",
            "data": {
                "conversationId": conversation, "userId": self.user, "isTyping": typing,
                "timestamp": chrono::Utc::now(),
            },
        });
        let signal = signal.to_string();
        let passed = realtime
            .signal_members(
                self.tenant,
                &conversation,
                self.user,
                &signal,
                TYPING_AUDIENCE_MAX,
            )
            .await
            .map_err(|e| Refusal::unavailable("passing typing on", &e))?;
        if !passed {
            return Err(Refusal::new(
                "forbidden",
                format!(
                    "typing is passed on only in conversations of at most \
                     {TYPING_AUDIENCE_MAX} other members"
                ),
            ));
        }
        self.typing.insert(conversation, (now, typing));
        Ok(())
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

    /// Acts on an acknowledgement, a read, a typing indicator or a ping; answers a frame
    /// when the intent asks for one.
    async fn act(&mut self, intent: Intent) -> Result<Option<Frame>, Refusal> {
        match intent {
            Intent::Ack(cursor) => {
                let acknowledged = self
                    .realtime
                    .log()
                    .acknowledge(self.tenant, self.user, cursor)
                    .await;
                acknowledged.map(|()| None).map_err(|e| {
                    tracing::warn!(error = %e, "recording an acknowledgement failed");
                    Refusal::new(
                        "queue_unavailable",
                        "the acknowledgement was not recorded; send it again",
                    )
                })
            }
            Intent::Read(message_id) => {
                match self
                    .realtime
                    .read(self.tenant, &message_id, self.user)
                    .await
                {
                    Ok(ReadReceipt::UnknownMessage) => Err(Refusal::new(
                        "not_found",
                        format!("no message {message_id}"),
                    )),
                    Ok(ReadReceipt::NotARecipient) => Err(Refusal::new(
                        "forbidden",
                        format!("message {message_id} was not sent to you"),
                    )),
                    Ok(_) => Ok(None),
                    Err(e) => {
                        tracing::warn!(error = %e, "recording a read receipt failed");
                        Err(Refusal::new(
                            "queue_unavailable",
                            "the read receipt was not recorded; send it again",
                        ))
                    }
                }
            }
            Intent::Typing {
                conversation,
                typing,
            } => self.typing(conversation, typing).await.map(|()| None),
            Intent::Ping => Ok(Some(Frame::Pong)),
            // Handled by the loop, which holds what they change.
            Intent::Watch(_) | Intent::Reconnected | Intent::Send(_) => Ok(None),
        }
    }
}

/// Answers a reply, if there is one, that its intent was acted on.
fn done(reply: Option<Reply>) {
    if let Some(reply) = reply {
        reply.answer(json!({"status": "ok"}));
    }
}

/// The frame a signal carries (`{"type", "data"}`), if it is one.
fn signalled(signal: &str) -> Option<Frame> {
    let mut signal: Value = serde_json::from_str(signal).ok()?;
    let kind = signal["type"].as_str()?.to_owned();
    Some(Frame::Ephemeral {
        kind,
        data: signal["data"].take(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_reads_the_conversation_and_defaults_to_typing() {
        let typing = |body: Value| Intent::parse("typing", &body);
        assert_eq!(
            typing(json!({"conversationId": "c1", "isTyping": false})),
            Ok(Intent::Typing {
                conversation: "c1".into(),
                typing: false
            })
        );
        // Seed 002 names a conversation `chatId`.
        assert_eq!(
            typing(json!({"chatId": "c2"})),
            Ok(Intent::Typing {
                conversation: "c2".into(),
                typing: true
            })
        );
        assert!(typing(json!({"isTyping": true})).is_err());
        assert!(typing(json!({"conversationId": "c1", "isTyping": "yes"})).is_err());
    }

    #[test]
    fn a_send_needs_an_object_and_a_signal_becomes_an_ephemeral_frame() {
        let message = json!({"chatId": "c1", "content": "hi"});
        assert_eq!(
            Intent::parse("message:send", &message),
            Ok(Intent::Send(message))
        );
        assert!(Intent::parse("message:send", &json!("hi")).is_err());
        assert_eq!(
            signalled(r#"{"type": "typing", "data": {"userId": "ann"}}"#),
            Some(Frame::Ephemeral {
                kind: "typing".into(),
                data: json!({"userId": "ann"})
            })
        );
        assert_eq!(signalled("not json"), None);
    }
}
