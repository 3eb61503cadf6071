//! The send endpoints: each event is parsed at the edge and handed to [`Ingress`], which
//! answers 202 only once the broker holds it durably and its acceptance is recorded.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::answers::{BodyRefusals, KeyRefusals, SendRefusals};
use super::error::{ApiError, invalid};
use crate::domain::parse::{FieldError, FieldErrors, Fields, FromJson};
use crate::domain::{
    AuditEvent, ChatMessage, EmailNotification, Event, EventKind, Published, PushNotification,
    TenantId, UserUpdate,
};
use crate::idempotency::fingerprint;
pub use crate::ingress::{Accepted, BatchAccepted};
use crate::ingress::{IdempotencyKey, Ingress, IngressError, Receipt, Submission};
use crate::realtime::ChatSends;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// The most events one batch may hold.
pub const BATCH_LIMIT: usize = 1000;

/// The send routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/messages", post(send_chat))
        .route("/v1/notifications/push", post(send_push))
        .route("/v1/notifications/email", post(send_email))
        .route("/v1/audit/events", post(send_audit))
        .route("/v1/batch", post(send_batch))
}

/// A batch of events of any kind.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the request; the body is parsed field by field.
pub struct Batch {
    /// 1 to 1000 events, each with a `kind` (`chat`, `push`, `email`, `audit`, `update`)
    /// and the fields of that kind.
    #[schema(schema_with = batch_events)]
    events: Vec<Value>,
}

/// The events of a batch: each is the document of its `kind`, with the `kind` added.
fn batch_events() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder};
    use utoipa::openapi::{Ref, Type};
    let mut kinds = OneOfBuilder::new();
    for kind in EventKind::ALL {
        let document = match kind {
            EventKind::Chat => ChatMessage::name(),
            EventKind::Push => PushNotification::name(),
            EventKind::Email => EmailNotification::name(),
            EventKind::Audit => AuditEvent::name(),
            EventKind::Update => UserUpdate::name(),
        };
        let tagged = ObjectBuilder::new()
            .property(
                "kind",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([kind.as_str()])),
            )
            .required("kind");
        kinds = kinds.item(
            AllOfBuilder::new()
                .item(Ref::from_schema_name(document))
                .item(tagged),
        );
    }
    ArrayBuilder::new()
        .items(kinds)
        .min_items(Some(1))
        .max_items(Some(BATCH_LIMIT))
        .into()
}

/// The key decides the tenant: a `tenantId` in the body must name the same tenant (403
/// otherwise), and one is filled in when the body has none.
fn bind_tenant(body: &mut Value, tenant: &TenantId) -> Result<(), ApiError> {
    let Some(fields) = body.as_object_mut() else {
        return Ok(()); // Not an object: parsing reports it.
    };
    match fields.get("tenantId").filter(|v| !v.is_null()) {
        None => {
            fields.insert("tenantId".into(), Value::String(tenant.as_str().to_owned()));
            Ok(())
        }
        Some(given) => match TenantId::from_json(given) {
            Ok(given) if given != *tenant => Err(ApiError::Forbidden(format!(
                "tenantId '{given}' is not the tenant of this API key"
            ))),
            // The same tenant, or not a tenant id at all, which parsing reports.
            _ => Ok(()),
        },
    }
}

/// The HTTP answer of a receipt.
fn respond(receipt: Receipt) -> Response {
    let status = StatusCode::from_u16(receipt.status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        receipt.body,
    )
        .into_response();
    if let Some(location) = receipt
        .location
        .and_then(|l| HeaderValue::from_str(&l).ok())
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The `Idempotency-Key` header every send reads, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documents the header, which `idempotency_key` reads.
pub(super) struct IdempotencyHeader {
    /// The same key within the idempotency window answers the first send's 202 and queues
    /// nothing; with a different body it is 422. 1 to 255 printable ASCII characters.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
}

/// The send's idempotency key: the `Idempotency-Key` header, else `fallback`; with the
/// fingerprint of `route` and `body`.
pub(super) fn idempotency_key(
    headers: &HeaderMap,
    fallback: Option<String>,
    route: &str,
    body: &Value,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let with_fingerprint = |key: Option<String>| {
        key.map(|key| IdempotencyKey {
            key,
            fingerprint: fingerprint(route, body),
        })
    };
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(with_fingerprint(fallback));
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::Validation(FieldErrors(vec![FieldError {
                field: "Idempotency-Key".into(),
                message: "must be 1 to 255 printable ASCII characters".into(),
            }]))
        })?;
    Ok(with_fingerprint(Some(format!("header:{key}"))))
}

impl AppState {
    /// Hands a parsed submission to the ingress and answers as it says.
    pub(super) async fn accept(
        &self,
        tenant: &TenantId,
        key: Option<IdempotencyKey>,
        submission: Submission,
    ) -> Result<Response, ApiError> {
        match self.ingress.accept(tenant, key, submission).await {
            Ok(receipt) => Ok(respond(receipt)),
            Err(e) => Err(refused(e, self.retry_after)),
        }
    }
}

/// The answer to a submission the ingress did not accept.
fn refused(e: IngressError, retry_after: Duration) -> ApiError {
    match e {
        IngressError::RateLimited(wait) => ApiError::RateLimited(wait),
        e @ IngressError::OverBurst { .. } => invalid("events", e.to_string()),
        IngressError::Idempotency(e) => e.into(),
        IngressError::NotQueued { message, details } => ApiError::Unavailable {
            message,
            retry_after,
            details,
        },
    }
}

/// The idempotency key a send has without an `Idempotency-Key` header: a chat message
/// is sent once per `messageId`, as the seeds' clients expect when they send again after
/// a lost answer; an event in seed 001's envelope once per the envelope's `id`; others
/// have none.
fn implicit_key(event: &Event, wrapper_id: Option<String>) -> Option<String> {
    match event {
        Event::Chat(message) => Some(format!("messageId:{}", message.message_id)),
        _ => wrapper_id.map(|id| format!("id:{id}")),
    }
}

/// Sends one event of `kind`, posted to `route`: the key's tenant bound, the document
/// parsed, and the event handed to the ingress.
pub(super) async fn send_one(
    state: AppState,
    tenant: TenantId,
    headers: HeaderMap,
    body: Value,
    (kind, route): (EventKind, &str),
) -> Result<Response, ApiError> {
    let published = Published::read(body);
    let wrapper_id = published.wrapper_id();
    let (event, key) = parse_one(
        &tenant,
        &headers,
        published.payload,
        wrapper_id,
        (kind, route),
    )?;
    state.accept(&tenant, key, Submission::One(event)).await
}

/// The event of `kind` in `payload` (an envelope's payload, or the document itself),
/// posted to `route`: the key's tenant bound, parsed, with its idempotency key.
fn parse_one(
    tenant: &TenantId,
    headers: &HeaderMap,
    mut payload: Value,
    wrapper_id: Option<String>,
    (kind, route): (EventKind, &str),
) -> Result<(Event, Option<IdempotencyKey>), ApiError> {
    bind_tenant(&mut payload, tenant)?;
    let event = Event::parse(kind, &payload)?;
    let key = idempotency_key(headers, implicit_key(&event, wrapper_id), route, &payload)?;
    Ok((event, key))
}

/// Declares the documented send route of one event kind: its handler is [`send_one`].
macro_rules! send_route {
    ($(#[doc = $doc:literal])* $handler:ident, $path:literal, $document:ident, $kind:expr) => {
        $(#[doc = $doc])*
        ///
        /// The event may also come wrapped as a message queue's envelope,
        /// `{"id", "type", "payload": {...}, "timestamp"}`: the payload is the event, and
        /// without an `Idempotency-Key` the envelope's `id` is its key (a chat message keeps its
        /// `messageId` as its key).
        #[utoipa::path(post, path = $path, tag = "send", request_body = $document,
            security(("api_key" = [])), params(IdempotencyHeader),
            responses((status = 202, description = "Durably queued", body = Accepted,
                           headers(("Location" = String, description = "Where the notification's status is"))),
                      KeyRefusals, BodyRefusals, SendRefusals))]
        pub async fn $handler(
            State(state): State<AppState>,
            Authenticated(tenant): Authenticated,
            headers: HeaderMap,
            JsonBody(body): JsonBody,
        ) -> Result<Response, ApiError> {
            send_one(state, tenant, headers, body, ($kind, $path)).await
        }
    };
}

send_route!(
    /// Sends a chat message to the participants of a conversation.
    send_chat, "/v1/chat/messages", ChatMessage, EventKind::Chat
);
send_route!(
    /// Sends a push notification to users' devices.
    send_push, "/v1/notifications/push", PushNotification, EventKind::Push
);
send_route!(
    /// Sends an email rendered from a template, one message per recipient.
    send_email, "/v1/notifications/email", EmailNotification, EventKind::Email
);
send_route!(
    /// Records an audit event.
    send_audit, "/v1/audit/events", AuditEvent, EventKind::Audit
);

/// Parses a batch: every event is checked before any is queued.
fn parse_batch(body: &Value) -> Result<Vec<Event>, FieldErrors> {
    let fields = Fields::of(body)?;
    let invalid = |message: String| {
        FieldErrors(vec![FieldError {
            field: "events".into(),
            message,
        }])
    };
    let items = fields
        .raw("events")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("must be an array of 1 to {BATCH_LIMIT} events")))?;
    if items.is_empty() || items.len() > BATCH_LIMIT {
        return Err(invalid(format!(
            "must hold 1 to {BATCH_LIMIT} events, not {}",
            items.len()
        )));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let prefix = format!("events[{index}]");
        let parsed = match item.get("kind").map(EventKind::from_json_value) {
            None => Err(FieldErrors(vec![FieldError {
                field: "kind".into(),
                message: "is required".into(),
            }])),
            Some(Err(message)) => Err(FieldErrors(vec![FieldError {
                field: "kind".into(),
                message,
            }])),
            Some(Ok(kind)) => Event::parse(kind, item),
        };
        match parsed {
            Ok(event) => events.push(event),
            Err(e) => errors.extend(e.nested(&prefix).0),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(FieldErrors(errors))
    }
}

/// Sends up to 1000 events of any kinds at once.
#[utoipa::path(post, path = "/v1/batch", tag = "send", request_body = Batch,
    security(("api_key" = [])), params(IdempotencyHeader),
    responses((status = 202, description = "Every event durably queued", body = BatchAccepted),
              KeyRefusals, BodyRefusals, SendRefusals))]
pub async fn send_batch(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    if let Some(events) = body.get_mut("events").and_then(Value::as_array_mut) {
        for event in events {
            bind_tenant(event, &tenant)?;
        }
    }
    let events = parse_batch(&body)?;
    let key = idempotency_key(&headers, None, "/v1/batch", &body)?;
    // The parsed events are all that is needed from here on: free the document now, not
    // after the broker has confirmed every event.
    drop(body);
    state.accept(&tenant, key, Submission::Batch(events)).await
}

/// Chat messages sent from a real-time socket (`message:send`, seed 002): the document,
/// idempotency key and ingress of `POST /v1/chat/messages`, sent as the token's user.
pub struct SocketSends {
    ingress: Arc<Ingress>,
    retry_after: Duration,
}

impl SocketSends {
    /// Sends through `ingress`; a 503's `retry_after` is what HTTP would answer.
    pub fn new(ingress: Arc<Ingress>, retry_after: Duration) -> Self {
        SocketSends {
            ingress,
            retry_after,
        }
    }

    async fn send(
        &self,
        tenant: &TenantId,
        sender: &str,
        message: Value,
    ) -> Result<Value, ApiError> {
        let mut body = Published::read(message).payload;
        let fields = body
            .as_object_mut()
            .ok_or_else(|| invalid("message", "must be a chat message (an object)"))?;
        // The sender is whoever holds the token, whatever the message says; a message
        // without an id (seed 002 lets the server name it) gets one, and is then sent once.
        fields.insert("senderId".into(), Value::String(sender.to_owned()));
        if fields.get("messageId").is_none_or(Value::is_null) {
            let id = uuid::Uuid::now_v7().to_string();
            fields.insert("messageId".into(), Value::String(id));
        }
        let route = (EventKind::Chat, "/v1/chat/messages");
        let (event, key) = parse_one(tenant, &HeaderMap::new(), body, None, route)?;
        let Event::Chat(message) = &event else {
            unreachable!("a chat document parses as a chat message")
        };
        let mut sent = json!({
            "messageId": message.message_id, "conversationId": message.conversation_id,
            "chatId": message.conversation_id, "timestamp": message.timestamp,
        });
        let receipt = self
            .ingress
            .accept(tenant, key, Submission::One(event))
            .await
            .map_err(|e| refused(e, self.retry_after))?;
        // Accepted now, or before under the same messageId (only acceptances are kept).
        let answer: Value = serde_json::from_str(&receipt.body).unwrap_or_default();
        sent["id"] = answer["id"].clone();
        sent["status"] = answer["status"].clone();
        Ok(sent)
    }
}

#[async_trait::async_trait]
impl ChatSends for SocketSends {
    async fn send_chat(
        &self,
        tenant: &TenantId,
        sender: &str,
        message: Value,
    ) -> Result<Value, Value> {
        let message_id = message["messageId"].clone();
        self.send(tenant, sender, message).await.map_err(|e| {
            let mut body = serde_json::to_value(e.into_body()).unwrap_or_default();
            body["messageId"] = message_id;
            body
        })
    }
}
