//! The wire envelope: what travels through the broker, in the contract's shape
//! `{"id", "kind", "tenantId", "createdAt", "payload"}`.
//!
//! Services that publish to the exchanges themselves may send only `{"payload": {...}}`;
//! the rest is then derived from the routing key and the AMQP properties, so that such a
//! message is handled exactly like one that came over HTTP.

use super::events::{Event, EventKind};
use super::ids::{NotificationId, TenantId};
use super::parse::{FieldErrors, FromJson};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// An accepted event with the facts Herald adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Herald's id for the event.
    pub id: NotificationId,
    /// When Herald (or the direct publisher) accepted it.
    pub created_at: DateTime<Utc>,
    /// The event itself.
    pub event: Event,
    /// Whether the event may have been published more than once under this id (it was
    /// sent with an idempotency key, whose repeat republishes an unconfirmed event):
    /// handlers then look up what was already done for it before doing it again.
    pub deduplicate: bool,
}

/// Why a message taken off a queue cannot be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not a JSON document.
    #[error("the body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// Neither the envelope nor the routing key says what kind of event this is.
    #[error("no 'kind' in the envelope and routing key '{0}' names no kind")]
    UnknownKind(String),
    /// The envelope has no `payload` object.
    #[error("the envelope has no 'payload' object")]
    NoPayload,
    /// The payload is not a valid event of its kind.
    #[error("the payload is not a valid {} event: {errors}", .kind.as_str())]
    InvalidPayload {
        /// The kind it was read as.
        kind: EventKind,
        /// What is wrong with it.
        errors: FieldErrors,
        /// Its id, as a valid event's would be read.
        id: NotificationId,
        /// The tenant it names, if it names a valid one: whose ledger records the
        /// rejection.
        tenant: Option<TenantId>,
        /// When it was published.
        created_at: DateTime<Utc>,
    },
}

/// The envelope as serialized, borrowing from an [`Envelope`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    id: NotificationId,
    kind: EventKind,
    tenant_id: &'a TenantId,
    created_at: DateTime<Utc>,
    payload: &'a Event,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deduplicate: bool,
}

/// What a direct publisher's AMQP properties say about a message.
#[derive(Debug, Default, Clone)]
pub struct WireProperties<'a> {
    /// The `message_id` property.
    pub message_id: Option<&'a str>,
    /// The `timestamp` property, in seconds since the epoch.
    pub timestamp: Option<u64>,
}

impl Envelope {
    /// Wraps an event accepted now under a fresh id.
    pub fn new(event: Event) -> Self {
        Envelope {
            id: NotificationId::new(),
            created_at: Utc::now(),
            event,
            deduplicate: false,
        }
    }

    /// Wraps an event under the id and acceptance time an idempotency key bound it to;
    /// it may be published more than once, so it is marked for deduplication.
    pub fn bound(event: Event, id: NotificationId, created_at: DateTime<Utc>) -> Self {
        Envelope {
            id,
            created_at,
            event,
            deduplicate: true,
        }
    }

    /// The message body published to the broker.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Wire {
            id: self.id,
            kind: self.event.kind(),
            tenant_id: self.event.tenant_id(),
            created_at: self.created_at,
            payload: &self.event,
            deduplicate: self.deduplicate,
        })
        .expect("an envelope always serializes")
    }

    /// Reads a message taken off a queue, filling in what a direct publisher left out.
    pub fn from_wire(
        body: &[u8],
        routing_key: &str,
        properties: WireProperties<'_>,
    ) -> Result<Envelope, EnvelopeError> {
        let mut document: Value = serde_json::from_slice(body)?;
        let kind = match document.get("kind").and_then(Value::as_str) {
            Some(kind) => EventKind::parse(kind),
            None => EventKind::of_routing_key(routing_key),
        }
        .ok_or_else(|| EnvelopeError::UnknownKind(routing_key.to_owned()))?;
        let envelope_tenant = document.get("tenantId").cloned();
        let id = document
            .get("id")
            .and_then(|v| NotificationId::from_json(v).ok())
            .or_else(|| properties.message_id.map(id_from_message_id))
            .unwrap_or_default();
        let created_at = document
            .get("createdAt")
            .and_then(|v| DateTime::<Utc>::from_json(v).ok())
            .or_else(|| {
                let secs = i64::try_from(properties.timestamp?).ok()?;
                DateTime::from_timestamp(secs, 0)
            })
            .unwrap_or_else(Utc::now);
        let payload = document
            .get_mut("payload")
            .filter(|p| p.is_object())
            .ok_or(EnvelopeError::NoPayload)?;
        // The contract lets publishers put tenantId on the envelope or inside the payload.
        if let (Some(tenant), Some(fields)) = (envelope_tenant, payload.as_object_mut()) {
            fields.entry("tenantId").or_insert(tenant);
        }
        let event =
            Event::parse(kind, payload).map_err(|errors| EnvelopeError::InvalidPayload {
                kind,
                errors,
                id,
                tenant: payload
                    .get("tenantId")
                    .and_then(|t| TenantId::from_json(t).ok()),
                created_at,
            })?;
        let deduplicate = document
            .get("deduplicate")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Envelope {
            id,
            created_at,
            event,
            deduplicate,
        })
    }
}

/// A stable id for a direct publisher's `message_id`, so that a redelivered message keeps
/// its id: the UUID itself if it is one, a name-based UUID of it otherwise. The same
/// mapping lets `GET /v1/notifications/{messageId}` find it by the id its publisher gave.
pub fn id_from_message_id(message_id: &str) -> NotificationId {
    NotificationId::parse(message_id).unwrap_or_else(|_| {
        NotificationId::parse(
            &uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, message_id.as_bytes()).to_string(),
        )
        .expect("a UUID's own text parses")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push_payload() -> Value {
        json!({"recipientIds": ["user_123"], "title": "New Message", "body": "Hi", "tenantId": 1})
    }

    #[test]
    fn an_envelope_round_trips_through_its_wire_form() {
        let event = Event::parse(EventKind::Push, &push_payload()).unwrap();
        let envelope = Envelope::new(event);
        let read =
            Envelope::from_wire(&envelope.to_bytes(), "push.mobile", Default::default()).unwrap();
        assert_eq!(read.id, envelope.id);
        assert_eq!(read.event, envelope.event);
        let wire: Value = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        assert_eq!(wire["kind"], "push");
        assert_eq!(wire["tenantId"], "1");
    }

    #[test]
    fn a_bare_payload_takes_its_kind_from_the_routing_key_and_its_id_from_message_id() {
        let body = serde_json::to_vec(&json!({"payload": push_payload()})).unwrap();
        let props = WireProperties {
            message_id: Some("order-42"),
            timestamp: Some(1_700_000_000),
        };
        let first = Envelope::from_wire(&body, "push.mobile", props.clone()).unwrap();
        let again = Envelope::from_wire(&body, "push.mobile", props).unwrap();
        assert_eq!(first.event.kind(), EventKind::Push);
        assert_eq!(first.id, again.id, "a redelivery keeps its id");
        assert_eq!(first.created_at.timestamp(), 1_700_000_000);
    }

    #[test]
    fn an_unreadable_message_says_why() {
        assert!(matches!(
            Envelope::from_wire(b"{\"payload\": {}}", "nothing.here", Default::default()),
            Err(EnvelopeError::UnknownKind(_))
        ));
        assert!(matches!(
            Envelope::from_wire(b"{\"payload\": {}}", "push.web", Default::default()),
            Err(EnvelopeError::InvalidPayload { .. })
        ));
    }
}
