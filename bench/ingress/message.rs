//! The message: Herald's own audit envelope, so that the raw and the HTTP phases publish
//! the same bytes.

use bytes::Bytes;
use herald::domain::{Envelope, Event, EventKind};
use serde_json::{Value, json};
use testkit::seeds::audit_event;

/// Events per `/v1/batch` request.
pub const BATCH_SIZE: usize = 100;

/// The envelope Herald would publish for the audit event, and its routing key.
pub fn audit_envelope() -> (Bytes, &'static str) {
    let event = Event::parse(EventKind::Audit, &audit_event()).expect("a valid audit event");
    // Only an update's key is made per event (it names the user); an audit event's is fixed.
    let std::borrow::Cow::Borrowed(routing_key) = event.routing_key() else {
        unreachable!("an audit event's routing key is fixed")
    };
    (Envelope::new(event).to_bytes().into(), routing_key)
}

/// The `/v1/batch` body: `BATCH_SIZE` audit events.
pub fn batch_body() -> Bytes {
    let mut event = audit_event();
    event["kind"] = json!("audit");
    let events: Vec<Value> = (0..BATCH_SIZE).map(|_| event.clone()).collect();
    serde_json::to_vec(&json!({ "events": events }))
        .expect("JSON serializes")
        .into()
}

/// A fresh message id, as Herald gives each event its own.
pub fn message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
