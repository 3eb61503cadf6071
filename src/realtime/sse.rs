//! The Server-Sent Events transport of a [`session`](super::session), for clients that
//! cannot hold a WebSocket.
//!
//! Each frame is an event named as on the WebSocket (`event: message:new`) with its data
//! as JSON; log events and `ready` carry `id: <cursor>`, so that an `EventSource` that
//! reconnects sends `Last-Event-ID` and resumes exactly where it stopped. A heartbeat is
//! a comment. The client cannot speak on this stream (it acknowledges and reads over
//! HTTP), so it is never dropped for silence, only for not keeping up.

use super::Realtime;
use super::session::{self, End, Frame, Incoming, Transport};
use crate::domain::TenantId;
use axum::response::sse::{Event, Sse};
use futures_util::Stream;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Events waiting for the response body: with the send timeout, what bounds a stalled
/// client.
const QUEUE: usize = 16;

/// The stream of `user`'s session from `since` (else from what the user acknowledged
/// last); the session runs until the client goes away or stops keeping up.
pub fn open(
    realtime: Arc<Realtime>,
    tenant: TenantId,
    user: String,
    since: Option<i64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (events, mut queued) = mpsc::channel(QUEUE);
    let timeout = realtime.settings().send_timeout;
    let transport = SseTransport { events, timeout };
    // The body pulls from the queue as the client takes it; the session pushes into it.
    tokio::spawn(session::run(realtime, tenant, user, since, transport));
    Sse::new(futures_util::stream::poll_fn(move |cx| {
        queued.poll_recv(cx).map(|event| event.map(Ok))
    }))
}

struct SseTransport {
    events: mpsc::Sender<Event>,
    timeout: Duration,
}

/// A frame as an SSE event.
fn render(frame: Frame) -> Event {
    let (kind, cursor, data) = match frame {
        Frame::Event { kind, cursor, data } => (kind, Some(cursor), data),
        Frame::Presence(state) => ("user:presence".to_owned(), None, state),
        Frame::Ready { cursor } => (
            "ready".to_owned(),
            Some(cursor),
            json!({"cursor": cursor.to_string()}),
        ),
        Frame::Missed { cursor, data } => ("message:received".to_owned(), Some(cursor), data),
        Frame::Ephemeral { kind, data } => (kind, None, data),
        Frame::Pong => ("pong".to_owned(), None, json!({})),
        Frame::Error(message) => ("error".to_owned(), None, json!({"message": message})),
    };
    // JSON text has no line breaks, which SSE data may not hold.
    let event = Event::default().event(kind).data(data.to_string());
    match cursor {
        Some(cursor) => event.id(cursor.to_string()),
        None => event,
    }
}

impl SseTransport {
    async fn put(&mut self, event: Event) -> Result<(), End> {
        match tokio::time::timeout(self.timeout, self.events.send(event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Dropped("the client did not keep up")),
        }
    }
}

impl Transport for SseTransport {
    const ANSWERS_HEARTBEATS: bool = false;

    async fn send(&mut self, frame: Frame) -> Result<(), End> {
        self.put(render(frame)).await
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        // Keeps proxies from closing an idle stream, and finds a client that is gone.
        self.put(Event::default().comment("")).await
    }

    async fn receive(&mut self) -> Result<Incoming, End> {
        // Nothing comes from the client; its going away drops the body, and the queue.
        self.events.closed().await;
        Err(End::Closed)
    }
}
