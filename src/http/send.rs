//! The send endpoints: each event is parsed at the edge, wrapped in its envelope and
//! answered 202 only once the broker holds it durably.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use crate::broker::{Publication, PublishError};
use crate::domain::parse::{FieldError, FieldErrors, Fields, FromJson};
use crate::domain::{
    AuditEvent, ChatMessage, EmailNotification, Envelope, Event, EventKind, NotificationId,
    PushNotification, TenantId,
};
use crate::idempotency::{Begin, fingerprint};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The most events one batch may hold.
pub const BATCH_LIMIT: usize = 1000;

/// The send routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/messages", post(send_chat))
        .route("/v1/notifications/push", post(send_push))
        .route("/v1/notifications/email", post(send_email))
        .route(
            "/v1/audit/events",
            post(send_audit).get(super::audit::query),
        )
        .route("/v1/audit/verify", axum::routing::get(super::audit::verify))
        .route("/v1/batch", post(send_batch))
}

/// The answer to an accepted event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Herald's id for the event; its status is at `/v1/notifications/{id}`.
    #[schema(value_type = String, format = Uuid)]
    pub id: NotificationId,
    /// Always `queued`: the event is durably queued.
    pub status: &'static str,
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    /// One entry per event, in the order sent.
    pub results: Vec<Accepted>,
}

/// A batch of events of any kind.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the request; the body is parsed field by field.
pub struct Batch {
    /// 1 to 1000 events, each with a `kind` (`chat`, `push`, `email`, `audit`) and the
    /// fields of that kind.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
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

/// An answer to a send, with the `Location` of the event it is for, if it is one event.
trait Answer: Serialize {
    fn location(&self) -> Option<String>;
}

impl Answer for Accepted {
    fn location(&self) -> Option<String> {
        Some(format!("/v1/notifications/{}", self.id))
    }
}

impl Answer for BatchAccepted {
    fn location(&self) -> Option<String> {
        None
    }
}

/// An answer with its JSON body and, for a single event, its `Location`.
fn answer(status: u16, body: String, location: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A stored answer replayed for a repeat: its `Location` is read back from its body.
fn replayed(status: u16, body: String) -> Response {
    let location = serde_json::from_str::<Value>(&body).ok().and_then(|v| {
        v.get("id")
            .and_then(Value::as_str)
            .map(|id| format!("/v1/notifications/{id}"))
    });
    answer(status, body, location)
}

/// The send's idempotency key: the `Idempotency-Key` header, else `fallback`.
fn idempotency_key(
    headers: &HeaderMap,
    fallback: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(fallback);
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
    Ok(Some(format!("header:{key}")))
}

impl AppState {
    fn publication(&self, envelope: &Envelope) -> Publication {
        Publication {
            exchange: self.topology.queue(envelope.event.kind()).exchange.clone(),
            routing_key: envelope.event.routing_key().to_owned(),
            message_id: envelope.id.to_string(),
            body: envelope.to_bytes().into(),
        }
    }

    fn record_publish(&self, kind: EventKind, result: &Result<(), PublishError>) {
        let queue = &self.topology.queue(kind).configured_name;
        match result {
            Ok(()) => self.metrics.publish(queue, "confirmed"),
            Err(e) => self.metrics.publish(queue, e.label()),
        }
    }

    fn unavailable(&self, error: &PublishError, details: Vec<Value>) -> ApiError {
        tracing::warn!(error = %error, "event not queued");
        ApiError::Unavailable {
            message: format!("the event could not be queued ({error}); try again later"),
            retry_after: self.retry_after,
            details,
        }
    }

    /// Queues one event; returns once it is durable.
    async fn queue_one(&self, event: Event) -> Result<Accepted, ApiError> {
        let kind = event.kind();
        let envelope = Envelope::new(event);
        let started = std::time::Instant::now();
        let result = self.broker.publish(self.publication(&envelope)).await;
        self.metrics
            .confirm_seconds
            .get_or_create(&crate::telemetry::QueueLabels {
                queue: self.topology.queue(kind).configured_name.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.record_publish(kind, &result);
        match result {
            Ok(()) => {
                self.ledger.accepted(&envelope);
                Ok(Accepted {
                    id: envelope.id,
                    status: "queued",
                })
            }
            Err(e) => Err(self.unavailable(&e, Vec::new())),
        }
    }

    /// Runs `send` once per idempotency key: a repeat gets the first answer and sends
    /// nothing. Without a key, `send` just runs.
    async fn once<T: Answer>(
        &self,
        tenant: &TenantId,
        events: usize,
        key: Option<String>,
        fingerprint: [u8; 32],
        send: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Response, ApiError> {
        let events = u32::try_from(events).unwrap_or(u32::MAX);
        self.rate_limits
            .admit(tenant, events)
            .map_err(ApiError::RateLimited)?;
        let to_json = |answer: &T| serde_json::to_string(answer).expect("an answer serializes");
        let Some(key) = key else {
            let accepted = send.await?;
            return Ok(answer(202, to_json(&accepted), accepted.location()));
        };
        match self.idempotency.begin(tenant, &key, &fingerprint).await? {
            Begin::Repeat(status, body) => Ok(replayed(status, body)),
            Begin::First => match send.await {
                Ok(accepted) => {
                    let body = to_json(&accepted);
                    if let Err(e) = self.idempotency.finish(tenant, &key, 202, &body).await {
                        // The event is queued: say so. Repeats get 409 until the key expires.
                        tracing::error!(error = %e, "recording an idempotent answer failed");
                    }
                    Ok(answer(202, body, accepted.location()))
                }
                Err(e) => {
                    self.idempotency.abandon(tenant, &key).await;
                    Err(e)
                }
            },
        }
    }
}

/// Sends a chat message to the participants of a conversation.
#[utoipa::path(post, path = "/v1/chat/messages", tag = "send", request_body = ChatMessage,
    security(("api_key" = [])),
    responses((status = 202, description = "Durably queued", body = Accepted),
              (status = 401, body = ErrorBody), (status = 403, description = "tenantId differs from the key's tenant", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, description = "Broker full or down; see Retry-After", body = ErrorBody)))]
pub async fn send_chat(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    bind_tenant(&mut body, &tenant)?;
    let event = ChatMessage::parse(&body)?;
    let key = idempotency_key(&headers, Some(format!("messageId:{}", event.message_id)))?;
    let fingerprint = fingerprint("/v1/chat/messages", &body);
    state
        .once(
            &tenant,
            1,
            key,
            fingerprint,
            state.queue_one(Event::Chat(event)),
        )
        .await
}

/// Sends a push notification to users' devices.
#[utoipa::path(post, path = "/v1/notifications/push", tag = "send", request_body = PushNotification,
    security(("api_key" = [])),
    responses((status = 202, description = "Durably queued", body = Accepted),
              (status = 401, body = ErrorBody), (status = 403, description = "tenantId differs from the key's tenant", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, description = "Broker full or down; see Retry-After", body = ErrorBody)))]
pub async fn send_push(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    bind_tenant(&mut body, &tenant)?;
    let event = PushNotification::parse(&body)?;
    let key = idempotency_key(&headers, None)?;
    let fingerprint = fingerprint("/v1/notifications/push", &body);
    state
        .once(
            &tenant,
            1,
            key,
            fingerprint,
            state.queue_one(Event::Push(event)),
        )
        .await
}

/// Sends an email rendered from a template, one message per recipient.
#[utoipa::path(post, path = "/v1/notifications/email", tag = "send", request_body = EmailNotification,
    security(("api_key" = [])),
    responses((status = 202, description = "Durably queued", body = Accepted),
              (status = 401, body = ErrorBody), (status = 403, description = "tenantId differs from the key's tenant", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, description = "Broker full or down; see Retry-After", body = ErrorBody)))]
pub async fn send_email(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    bind_tenant(&mut body, &tenant)?;
    let event = EmailNotification::parse(&body)?;
    let key = idempotency_key(&headers, None)?;
    let fingerprint = fingerprint("/v1/notifications/email", &body);
    state
        .once(
            &tenant,
            1,
            key,
            fingerprint,
            state.queue_one(Event::Email(event)),
        )
        .await
}

/// Records an audit event.
#[utoipa::path(post, path = "/v1/audit/events", tag = "send", request_body = AuditEvent,
    security(("api_key" = [])),
    responses((status = 202, description = "Durably queued", body = Accepted),
              (status = 401, body = ErrorBody), (status = 403, description = "tenantId differs from the key's tenant", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, description = "Broker full or down; see Retry-After", body = ErrorBody)))]
pub async fn send_audit(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    bind_tenant(&mut body, &tenant)?;
    let event = AuditEvent::parse(&body)?;
    let key = idempotency_key(&headers, None)?;
    let fingerprint = fingerprint("/v1/audit/events", &body);
    state
        .once(
            &tenant,
            1,
            key,
            fingerprint,
            state.queue_one(Event::Audit(event)),
        )
        .await
}

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
    security(("api_key" = [])),
    responses((status = 202, description = "Every event durably queued", body = BatchAccepted),
              (status = 401, body = ErrorBody), (status = 403, description = "a tenantId differs from the key's tenant", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody),
              (status = 422, description = "Nothing queued; details name each invalid field", body = ErrorBody),
              (status = 503, description = "Not every event was queued; details give each event's status", body = ErrorBody)))]
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
    let key = idempotency_key(&headers, None)?;
    let fingerprint = fingerprint("/v1/batch", &body);
    // The parsed events are all that is needed from here on: free the document now, not
    // after the broker has confirmed every event.
    drop(body);
    let count = events.len();
    state
        .once(&tenant, count, key, fingerprint, state.queue_batch(events))
        .await
}

impl AppState {
    /// Queues every event of a batch; returns once all are durable.
    async fn queue_batch(&self, events: Vec<Event>) -> Result<BatchAccepted, ApiError> {
        let kinds: Vec<EventKind> = events.iter().map(Event::kind).collect();
        let envelopes: Vec<Envelope> = events.into_iter().map(Envelope::new).collect();
        let publications = envelopes.iter().map(|e| self.publication(e)).collect();
        let results = self.broker.publish_all(publications).await;
        for ((kind, result), envelope) in kinds.iter().zip(&results).zip(&envelopes) {
            self.record_publish(*kind, result);
            if result.is_ok() {
                self.ledger.accepted(envelope);
            }
        }
        if let Some(error) = results.iter().find_map(|r| r.as_ref().err()) {
            let details = envelopes
                .iter()
                .zip(&results)
                .enumerate()
                .map(|(index, (envelope, result))| match result {
                    Ok(()) => json!({"index": index, "id": envelope.id, "status": "queued"}),
                    Err(e) => {
                        json!({"index": index, "status": "rejected", "message": e.to_string()})
                    }
                })
                .collect();
            return Err(self.unavailable(error, details));
        }
        let results = envelopes
            .iter()
            .map(|e| Accepted {
                id: e.id,
                status: "queued",
            })
            .collect();
        Ok(BatchAccepted { results })
    }
}
