//! The wire envelope: what travels through the broker, in the contract's shape
//! `{"id", "kind", "tenantId", "createdAt", "payload"}`.
//!
//! Services that publish to the exchanges themselves send what the seeds send: seed 001's
//! `{id, type, payload, timestamp}`, `{"payload": {...}}`, or the bare payload ([`Published`]);
//! the rest is then derived from the routing key, the queue and the AMQP properties, so
//! that such a message is handled exactly like one that came over HTTP.

use super::events::{Event, EventKind};
use super::ids::{NotificationId, TenantId};
use super::parse::{FieldError, FieldErrors, FromJson};
use super::routing::{self, NoHandler};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

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
    /// The envelope names a kind Herald does not carry.
    #[error("the envelope's kind '{0}' is not one of chat, push, email, audit, update")]
    UnknownKind(String),
    /// The document is not a JSON object.
    #[error("the body is not a JSON object")]
    NotAnObject,
    /// The routing key is under a kind's prefix but names nothing Herald handles.
    #[error(transparent)]
    NoHandler(#[from] NoHandler),
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
    /// The tenant of a message that names none (`broker.default_tenant`), for services
    /// that know no tenants.
    pub default_tenant: Option<&'a TenantId>,
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

    /// Reads a message taken off the queue of `queue_kind`, filling in what a direct
    /// publisher left out: its kind and what its routing key implies (see
    /// [`routing::route`]), its id, its time and its tenant.
    pub fn from_wire(
        body: &[u8],
        routing_key: &str,
        queue_kind: EventKind,
        properties: WireProperties<'_>,
    ) -> Result<Envelope, EnvelopeError> {
        let Published { mut payload, outer } = Published::read(serde_json::from_slice(body)?);
        let routed = routing::route(queue_kind, routing_key)?;
        let kind = match outer.get("kind").and_then(Value::as_str) {
            Some(kind) => {
                EventKind::parse(kind).ok_or_else(|| EnvelopeError::UnknownKind(kind.to_owned()))?
            }
            None => routed.kind,
        };
        let id = outer
            .get("id")
            .and_then(published_id)
            .or_else(|| properties.message_id.map(id_from_message_id))
            // A bare chat message keeps the id its messageId gives it when redelivered, and
            // a bare seed 004 update the `_id` it was published under.
            .or_else(|| payload.get("messageId").and_then(published_id))
            .or_else(|| payload.get("_id").and_then(published_id))
            .unwrap_or_default();
        let created_at = ["createdAt", "timestamp"]
            .iter()
            .find_map(|field| DateTime::<Utc>::from_json(outer.get(*field)?).ok())
            // Seed 004's Update structure carries its own createdAt, which clients see.
            .or_else(|| {
                let at = payload
                    .get("createdAt")
                    .filter(|_| kind == EventKind::Update)?;
                DateTime::<Utc>::from_json(at).ok()
            })
            .or_else(|| {
                let secs = i64::try_from(properties.timestamp?).ok()?;
                DateTime::from_timestamp(secs, 0)
            })
            .unwrap_or_else(Utc::now);
        let fields = payload.as_object_mut().ok_or(EnvelopeError::NotAnObject)?;
        if let Some(tenant) = properties.default_tenant {
            fields
                .entry("tenantId")
                .or_insert_with(|| tenant.as_str().into());
        }
        if kind == routed.kind {
            for (field, value) in routed.implies {
                fields.entry(field).or_insert(value);
            }
        }
        let invalid = |errors| EnvelopeError::InvalidPayload {
            kind,
            errors,
            id,
            tenant: payload
                .get("tenantId")
                .and_then(|t| TenantId::from_json(t).ok()),
            created_at,
        };
        let event = Event::parse(kind, &payload).map_err(invalid)?;
        if let Event::Update(update) = &event
            && !routing::names_user(routing_key, update.user_id.as_str())
        {
            return Err(invalid(FieldErrors(vec![FieldError {
                field: "userId".into(),
                message: format!("is not the user of routing key '{routing_key}'"),
            }])));
        }
        let deduplicate = outer
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

/// A published document taken apart: the event's own fields, and what the wrapper around
/// them says. Three shapes arrive, over AMQP and over HTTP: Herald's envelope (`{id, kind,
/// tenantId, createdAt, payload}`), seed 001's message-queue envelope (`{id, type,
/// payload, timestamp}`), and the bare payload, which is the whole document. No event has
/// a field named `payload`, so an object under that name is always a wrapper's payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The event's fields, with the wrapper's `tenantId` when they name none.
    pub payload: Value,
    /// The wrapper's fields (`id`, `kind`, `type`, `tenantId`, `createdAt`, `timestamp`),
    /// empty for a bare payload.
    pub outer: Map<String, Value>,
}

impl Published {
    /// Takes `document` apart. A document that is not an object is kept whole as the
    /// payload, for the event's parser to refuse in its own words.
    pub fn read(document: Value) -> Published {
        match document {
            Value::Object(mut outer) if outer.get("payload").is_some_and(Value::is_object) => {
                let payload = outer.remove("payload").expect("just seen");
                // The contract lets publishers put tenantId on the envelope or inside the
                // payload.
                let mut payload = payload;
                if let (Some(tenant), Some(fields)) =
                    (outer.get("tenantId"), payload.as_object_mut())
                {
                    fields.entry("tenantId").or_insert(tenant.clone());
                }
                Published { payload, outer }
            }
            payload => Published {
                payload,
                outer: Map::new(),
            },
        }
    }

    /// The wrapper's id, as a publisher wrote it (seed 001's message-queue envelope gives
    /// each message one): what a repeat of the same message is known by.
    pub fn wrapper_id(&self) -> Option<String> {
        match self.outer.get("id")? {
            Value::String(id) => Some(id.clone()),
            Value::Number(id) => Some(id.to_string()),
            _ => None,
        }
    }
}

/// The id a publisher's own id stands for: a UUID as it is, any other text or number
/// through [`id_from_message_id`].
fn published_id(value: &Value) -> Option<NotificationId> {
    match value {
        Value::String(id) if !id.is_empty() => Some(id_from_message_id(id)),
        Value::Number(id) => Some(id_from_message_id(&id.to_string())),
        _ => None,
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
        let read = Envelope::from_wire(
            &envelope.to_bytes(),
            "push.mobile",
            EventKind::Push,
            Default::default(),
        )
        .unwrap();
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
            default_tenant: None,
        };
        let first =
            Envelope::from_wire(&body, "push.mobile", EventKind::Push, props.clone()).unwrap();
        let again = Envelope::from_wire(&body, "push.mobile", EventKind::Push, props).unwrap();
        assert_eq!(first.event.kind(), EventKind::Push);
        assert_eq!(first.id, again.id, "a redelivery keeps its id");
        assert_eq!(first.created_at.timestamp(), 1_700_000_000);
    }

    #[test]
    fn an_unreadable_message_says_why() {
        let read =
            |body: &[u8], key| Envelope::from_wire(body, key, EventKind::Push, Default::default());
        assert!(matches!(
            read(b"{\"kind\": \"fax\", \"payload\": {}}", "push.web"),
            Err(EnvelopeError::UnknownKind(_))
        ));
        assert!(matches!(
            read(b"{\"payload\": {}}", "push.web"),
            Err(EnvelopeError::InvalidPayload { .. })
        ));
        assert!(matches!(
            read(b"[1]", "push.web"),
            Err(EnvelopeError::NotAnObject)
        ));
        assert_eq!(
            read(b"{\"payload\": {}}", "push.sms")
                .unwrap_err()
                .to_string(),
            "no handler for routing key 'push.sms'"
        );
    }

    /// The shapes the seeds publish, as they write them.
    fn seed_shapes() -> Vec<Value> {
        let bare = json!({"recipientIds": ["user_123"], "title": "New Message", "body": "Hi",
                          "tenantId": "1"});
        vec![
            bare.clone(),
            json!({"id": "evt_1", "type": "push_notification", "payload": bare,
                   "timestamp": "2026-01-31T12:00:00.000Z"}),
            json!({"id": 42, "type": "push_notification", "payload": {
                "recipientIds": ["user_123"], "title": "New Message", "body": "Hi", "tenantId": 1},
                "timestamp": 1_769_860_800_000_u64}),
        ]
    }

    #[test]
    fn every_seed_shape_reads_as_the_same_event_and_the_key_names_the_platform() {
        for shape in seed_shapes() {
            let body = serde_json::to_vec(&shape).unwrap();
            let read = Envelope::from_wire(&body, "push.web", EventKind::Push, Default::default())
                .unwrap_or_else(|e| panic!("{shape}: {e}"));
            let Event::Push(push) = &read.event else {
                panic!("not a push: {shape}")
            };
            assert_eq!(push.tenant_id.as_str(), "1");
            assert_eq!(push.platform, super::super::Platform::Web, "{shape}");
        }
        let wrapped = serde_json::to_vec(&seed_shapes()[2]).unwrap();
        let read =
            Envelope::from_wire(&wrapped, "push.web", EventKind::Push, Default::default()).unwrap();
        assert_eq!(read.created_at.timestamp_millis(), 1_769_860_800_000);
        assert_eq!(
            read.id,
            id_from_message_id("42"),
            "the wrapper's id is kept"
        );
    }

    #[test]
    fn a_message_naming_no_tenant_is_the_default_tenants() {
        let mut payload = push_payload();
        payload.as_object_mut().unwrap().remove("tenantId");
        let body = serde_json::to_vec(&payload).unwrap();
        let read = |default_tenant| {
            let props = WireProperties {
                default_tenant,
                ..Default::default()
            };
            Envelope::from_wire(&body, "push.web", EventKind::Push, props)
        };
        assert!(read(None).is_err(), "no tenant, no default: rejected");
        let tenant = TenantId::parse("solo").unwrap();
        assert_eq!(read(Some(&tenant)).unwrap().event.tenant_id(), &tenant);
    }

    #[test]
    fn the_payloads_own_word_wins_over_the_routing_key() {
        let mut payload = push_payload();
        payload["platform"] = json!("mobile");
        let body = serde_json::to_vec(&payload).unwrap();
        let read =
            Envelope::from_wire(&body, "push.web", EventKind::Push, Default::default()).unwrap();
        assert_eq!(read.event.routing_key(), "push.mobile");
    }

    #[test]
    fn a_seed_004_update_keeps_its_id_and_time_and_its_key_names_the_user() {
        let update = json!({"_id": "507f1f77bcf86cd799439011", "tenantId": "tnt_default",
                            "userId": "usr_1", "eventType": "message.reaction.add",
                            "data": {"reaction": "+1"}, "published": true,
                            "createdAt": "2025-11-04T12:18:32.450Z"});
        let read = |body: &Value, key| {
            let body = serde_json::to_vec(body).unwrap();
            Envelope::from_wire(&body, key, EventKind::Update, Default::default())
        };
        let key = "user.usr_1.message.reaction.add";
        let envelope = read(&update, key).unwrap();
        assert_eq!(envelope.id, id_from_message_id("507f1f77bcf86cd799439011"));
        assert_eq!(envelope.created_at.timestamp_millis(), 1_762_258_712_450);
        let mut bare = update.clone();
        let fields = bare.as_object_mut().unwrap();
        fields.remove("userId");
        fields.remove("eventType");
        let Event::Update(from_key) = read(&bare, key).unwrap().event else {
            panic!("not an update")
        };
        assert_eq!(from_key.user_id.as_str(), "usr_1");
        assert_eq!(from_key.event_type.as_str(), "message.reaction.add");
        let error = read(&update, "user.usr_2.message.reaction.add").unwrap_err();
        assert!(error.to_string().contains("userId"), "{error}");
    }
}
