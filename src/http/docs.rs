//! The OpenAPI document, generated from the handlers and types, and a page that renders it.

use super::AppState;
use super::admin::{self, CreatedKey, CreatedTenant, KeyList, NewTenant};
use super::audit::{self, AuditItem, AuditPage};
use super::conversations::{
    self, ConversationBody, ConversationReadBody, ConversationReadView, ConversationView,
    MembersBody,
};
use super::devices::{self, DeviceBody, DeviceList};
use super::error::{ErrorBody, ErrorDetail};
use super::health::{self, BrokerHealthBody};
use super::inbox::{self, InboxList, InboxView};
use super::notifications::{self, NotificationStatus};
use super::providers::{self, ApnsBody, FcmBody, SmtpBody};
use super::queues::{self, DeadLetterBody, DeadLetters, Replayed};
use super::realtime::{
    self, IssuedToken, PresenceList, PresenceView, ReadBody, ReadView, TokenRequest,
};
use super::send::{self, Accepted, Batch, BatchAccepted};
use super::templates::{self, PreviewBody, PreviewView, TemplateBody, TemplateList, TemplateView};
use super::updates::{self, EditBody, ReactionBody, UpdateBody};
use crate::audit::Verification;
use crate::broker::QueueStats;
use crate::domain::parse::FieldError;
use crate::domain::{
    AuditEvent, ChatMessage, ConversationType, EmailNotification, MessageType, Platform, Priority,
    PushNotification, UserUpdate,
};
use crate::outcome::{Channel, DeliveryStatus, NotificationState, RenderedFrom};
use crate::store::{ApiKeyInfo, Tenant};
use crate::store::{Device, LedgerDelivery, LedgerNotification};
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use utoipa::OpenApi;

/// The API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Notification fan-out: chat, push, email, audit events and per-user updates, durably queued and delivered. \
                       Every send answers 202 only once the event is durably queued."
    ),
    paths(
        send::send_chat, send::send_push, send::send_email, send::send_audit, send::send_batch,
        updates::send_update, updates::edit_message, updates::delete_message, updates::react,
        health::alive, health::ready, health::rabbitmq, health::metrics,
        admin::create_tenant, admin::add_key, admin::list_keys, admin::revoke_key,
        queues::queues, queues::dead_letters, queues::replay, notifications::status,
        audit::query, audit::verify,
        templates::list, templates::put, templates::show, templates::delete, templates::preview,
        providers::put_smtp, providers::get_smtp, providers::delete_smtp,
        providers::put_apns, providers::get_apns, providers::delete_apns,
        providers::put_fcm, providers::get_fcm, providers::delete_fcm,
        devices::register, devices::list, devices::remove, realtime::issue, realtime::connect, realtime::events,
        realtime::read, realtime::presence, conversations::define, conversations::show,
        conversations::add_members, conversations::remove_members, conversations::mark_read,
        inbox::list, inbox::mark_read, inbox::remove, inbox::clear,
    ),
    components(schemas(
        ChatMessage, PushNotification, EmailNotification, AuditEvent, MessageType, ConversationType,
        Platform, Priority, Accepted, Batch, BatchAccepted, ErrorBody, ErrorDetail, FieldError,
        BrokerHealthBody, Tenant, ApiKeyInfo, CreatedKey, CreatedTenant, KeyList, NewTenant,
        QueueStats, DeadLetterBody, DeadLetters, Replayed, NotificationStatus, LedgerNotification,
        LedgerDelivery, AuditItem, AuditPage, Verification, TemplateView, TemplateList,
        TemplateBody, PreviewBody, PreviewView, RenderedFrom, NotificationState, DeliveryStatus, Channel, Device, DeviceBody, DeviceList,
        TokenRequest, IssuedToken, ReadBody, ReadView, PresenceList, PresenceView, InboxView,
        InboxList, SmtpBody, ApnsBody, FcmBody, ConversationBody, MembersBody,
        ConversationReadBody, ConversationView, ConversationReadView, UserUpdate, UpdateBody,
        EditBody, ReactionBody,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "send", description = "Queue events for delivery"),
        (name = "operations", description = "Health and metrics"),
        (name = "audit", description = "Audit records and their hash chain"),
        (name = "templates", description = "Email templates: versioned, checked, previewed"),
        (name = "realtime", description = "Delivery of chat and in-app events over WebSocket, Server-Sent Events (`/v1/realtime/sse`) and Socket.IO v4 (`/socket.io/`, token in `auth.token`, cursor in `auth.since`). From the socket a client may send `message:send` (a chat message, sent as the token's user through the same ingress as `POST /v1/chat/messages`, answered `message:sent` or `message:error` with the error shape, and in the acknowledgement callback) and `typing` (`{conversationId, isTyping}`, passed to the conversation's other members online, never stored)."),
        (name = "conversations", description = "Who is in each conversation, which chat messages without recipientIds go to; reading a whole conversation"),
        (name = "devices", description = "Where each user's pushes go"),
        (name = "providers", description = "A tenant's own delivery providers (secrets write-only)"),
        (name = "admin", description = "Tenants and API keys (admin token)"),
    )
)]
pub struct ApiDoc;

/// Declares the two bearer schemes: tenants' API keys and the admin token.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = || SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
        components.add_security_scheme("api_key", bearer());
        components.add_security_scheme("admin_token", bearer());
    }
}

/// The documentation routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/docs", get(|| async { Html(DOCS_PAGE) }))
        .route(REDOC_PATH, get(redoc))
}

/// The document, with the limits this instance is configured with.
async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(describe(state.realtime.settings().token_ttl_max.as_secs()))
}

/// The API's description, stating `token_ttl_max` (seconds) as the longest a real-time
/// token may live: the one bound of a request that configuration sets.
pub fn describe(token_ttl_max: u64) -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let lifetime = "/components/schemas/TokenRequest/properties/ttlSeconds/oneOf/0";
    if let Some(Value::Object(schema)) = document.pointer_mut(lifetime) {
        schema.insert("maximum".into(), token_ttl_max.into());
    }
    document
}

/// Where Herald serves Redoc's bundle: its version is in the path, so that a browser may
/// keep it for good. (A macro, so that the page below can name it too.)
macro_rules! redoc_path {
    () => {
        "/docs/redoc-2.5.4.standalone.js"
    };
}
const REDOC_PATH: &str = redoc_path!();

/// Redoc, compiled in (see `assets/redoc/README.md`): `/docs` loads nothing from
/// elsewhere, and works offline.
async fn redoc() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        include_bytes!("../../assets/redoc/redoc.standalone.js").as_slice(),
    )
}

/// Renders `/openapi.json` with Redoc, served by Herald itself.
const DOCS_PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Herald API</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
</head>
<body>
  <redoc spec-url="/openapi.json"></redoc>
  <noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
  <script src=""#,
    redoc_path!(),
    r#""></script>
</body>
</html>
"#
);
