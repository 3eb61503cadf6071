//! Real-time access: a tenant asks for a short-lived token for one of its users; the
//! user's browser or app opens `GET /v1/realtime?token=...` as a WebSocket with it.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::answers::{BodyRefusals, InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody, invalid};
use crate::domain::TenantId;
use crate::domain::UserId;
use crate::domain::parse::Fields;
use crate::domain::schema;
use crate::realtime::session::{CLIENT_MESSAGE_MAX, parse_cursor};
use crate::realtime::{socket, sse};
use crate::store::ReadReceipt;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The real-time routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/realtime/tokens", post(issue))
        .route("/v1/realtime", get(connect))
        .route("/v1/realtime/sse", get(events))
        .route("/v1/chat/messages/{message_id}/read", post(read))
        .route("/v1/presence", get(presence))
}

/// A read receipt as answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadView {
    /// The message.
    pub message_id: String,
    /// Who read it.
    pub user_id: String,
    /// Whether this request recorded it (false: it was read before).
    pub recorded: bool,
}

/// The body of `POST /v1/chat/messages/{messageId}/read`.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct ReadBody {
    /// The recipient who read it.
    #[schema(schema_with = schema::opaque_id)]
    user_id: String,
}

/// Records that a recipient read a message; the sender's connections get `message:read`.
#[utoipa::path(post, path = "/v1/chat/messages/{messageId}/read", tag = "realtime", security(("api_key" = [])),
    params(("messageId" = String, Path, description = "The message")),
    request_body = ReadBody,
    responses((status = 200, body = ReadView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), KeyRefusals, BodyRefusals))]
pub async fn read(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    axum::extract::Path(message_id): axum::extract::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<ReadView>, ApiError> {
    let mut fields = Fields::of(&body)?;
    let user = fields.required::<UserId>("userId");
    let user = fields.finish(|| user)?;
    let receipt = state
        .realtime
        .read(&tenant, &message_id, user.as_str())
        .await?;
    let recorded = match receipt {
        ReadReceipt::UnknownMessage => {
            return Err(ApiError::NotFound(format!("message {message_id}")));
        }
        ReadReceipt::NotARecipient => {
            return Err(ApiError::Forbidden(format!(
                "{user} is not a recipient of message {message_id}"
            )));
        }
        ReadReceipt::Recorded { .. } => true,
        ReadReceipt::AlreadyRead => false,
    };
    Ok(Json(ReadView {
        message_id,
        user_id: user.as_str().to_owned(),
        recorded,
    }))
}

/// The query of `GET /v1/presence`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct PresenceParams {
    /// Comma-separated user ids (1 to 1000; spaces around each are ignored).
    #[param(pattern = "^[^,]*[^,\\s][^,]*(,[^,]*[^,\\s][^,]*){0,999}$")]
    user_ids: String,
}

/// Where users are.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceList {
    /// One entry per user asked about, in the order asked.
    pub users: Vec<PresenceView>,
}

/// Where one user is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceView {
    /// The user.
    pub user_id: String,
    /// Whether a connection of the user is open on some instance.
    pub online: bool,
    /// When the user was last connected; null if never.
    pub last_seen: Option<DateTime<Utc>>,
}

/// Whether users are connected, and when they last were.
#[utoipa::path(get, path = "/v1/presence", tag = "realtime", security(("api_key" = [])), params(PresenceParams),
    responses((status = 200, body = PresenceList), KeyRefusals, InputRefusals))]
pub async fn presence(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    query: Result<Query<PresenceParams>, QueryRejection>,
) -> Result<Json<PresenceList>, ApiError> {
    let Query(params) = query.map_err(|e| invalid("query", e.body_text()))?;
    let users: Vec<&str> = params.user_ids.split(',').map(str::trim).collect();
    if users.contains(&"") || users.len() > 1000 {
        return Err(invalid(
            "userIds",
            "must list 1 to 1000 user ids, comma-separated",
        ));
    }
    let found = state.realtime.presence(&tenant, &users).await?;
    Ok(Json(PresenceList {
        users: found
            .into_iter()
            .map(|p| PresenceView {
                user_id: p.user_id,
                online: p.online,
                last_seen: p.last_seen,
            })
            .collect(),
    }))
}

/// The body of `POST /v1/realtime/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct TokenRequest {
    /// The user the socket is for.
    #[schema(schema_with = schema::opaque_id)]
    user_id: String,
    /// The token's lifetime in seconds, from 1 to `realtime.token_ttl_max` (default
    /// `realtime.token_ttl`).
    #[schema(schema_with = token_lifetime)]
    ttl_seconds: Option<u32>,
}

/// A token's lifetime as documented; `/openapi.json` states the configured maximum
/// (see [`super::docs`]).
fn token_lifetime() -> utoipa::openapi::schema::Schema {
    schema::or_null(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .minimum(Some(1))
            .into(),
    )
}

/// A real-time token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    /// Pass as `?token=` when opening the socket.
    pub token: String,
    /// When it stops opening sockets (an open socket stays open).
    pub expires_at: DateTime<Utc>,
}

/// The query of `GET /v1/realtime`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectParams {
    /// A token from `POST /v1/realtime/tokens`.
    token: Option<String>,
    /// The cursor of the last frame the client has; what came after is replayed first.
    #[param(pattern = "^(0|[1-9][0-9]{0,17})$")]
    since: Option<String>,
}

/// Issues a token that opens a WebSocket for one user of the key's tenant.
#[utoipa::path(post, path = "/v1/realtime/tokens", tag = "realtime", security(("api_key" = [])),
    request_body = TokenRequest,
    responses((status = 201, body = IssuedToken), KeyRefusals, BodyRefusals))]
pub async fn issue(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let settings = state.realtime.settings();
    let mut fields = Fields::of(&body)?;
    let user = fields.required::<UserId>("userId");
    let ttl = fields.optional::<u32>("ttlSeconds");
    let max = settings.token_ttl_max.as_secs();
    if let Some(ttl) = ttl
        && (ttl == 0 || u64::from(ttl) > max)
    {
        fields.error("ttlSeconds", format!("must be from 1 to {max}"));
    }
    let user = fields.finish(|| user)?;
    let ttl = ttl.map_or(settings.token_ttl, |s| {
        std::time::Duration::from_secs(s.into())
    });
    let expires_at =
        Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
    let token = state.realtime.issue(&tenant, user.as_str(), expires_at);
    Ok((StatusCode::CREATED, Json(IssuedToken { token, expires_at })))
}

/// Opens the user's WebSocket. A missing, forged or expired token is 401 before any
/// upgrade.
#[utoipa::path(get, path = "/v1/realtime", tag = "realtime", params(ConnectParams),
    responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 401, body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade", body = ErrorBody), InputRefusals))]
pub async fn connect(
    State(state): State<AppState>,
    query: Result<Query<ConnectParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::UpgradeRequired(format!(
            "this is a WebSocket endpoint: open it with a WebSocket client ({})",
            e.body_text()
        ))
    })?;
    let (tenant, user, since) = who(&state, query, None)?;
    let realtime = state.realtime.clone();
    // Small buffers: a client sends only small frames, and tungstenite's defaults (128 KiB
    // each way) would cost far more memory per connection than the session itself.
    let upgrade = upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(CLIENT_MESSAGE_MAX)
        .max_frame_size(CLIENT_MESSAGE_MAX);
    Ok(upgrade.on_upgrade(move |socket| socket::run(realtime, tenant, user, since, socket)))
}

/// The user of a session's token (`?token=`), and where the session starts: the
/// `Last-Event-ID` an `EventSource` resends (`last_event`), else `?since=`.
fn who(
    state: &AppState,
    query: Result<Query<ConnectParams>, QueryRejection>,
    last_event: Option<&str>,
) -> Result<(TenantId, String, Option<i64>), ApiError> {
    let Query(params) = query.map_err(|e| invalid("query", e.body_text()))?;
    let token = params
        .token
        .ok_or_else(|| ApiError::Unauthorized("a real-time token is required (?token=)".into()))?;
    let (tenant, user) = state
        .realtime
        .check(&token)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let since = match last_event {
        Some(id) => Some(
            parse_cursor(id)
                .ok_or_else(|| invalid("Last-Event-ID", "must be the id of an event"))?,
        ),
        None => params
            .since
            .map(|since| {
                parse_cursor(&since)
                    .ok_or_else(|| invalid("since", "must be the cursor of a frame"))
            })
            .transpose()?,
    };
    Ok((tenant, user, since))
}

/// Streams the user's events as Server-Sent Events, for clients that cannot hold a
/// WebSocket. A missing, forged or expired token is 401 before the stream starts.
#[utoipa::path(get, path = "/v1/realtime/sse", tag = "realtime",
    params(ConnectParams,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event the client has, which an `EventSource` sends when it reconnects; it wins over `since`")),
    responses((status = 200, description = "The events, as on the WebSocket: `event: <type>`, `id: <cursor>` (log events and `ready`), `data: <JSON>`; a comment every heartbeat", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), InputRefusals))]
pub async fn events(
    State(state): State<AppState>,
    query: Result<Query<ConnectParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_event = headers
        .get("last-event-id")
        .map(|id| id.to_str().unwrap_or("invalid"));
    let (tenant, user, since) = who(&state, query, last_event)?;
    Ok(sse::open(state.realtime.clone(), tenant, user, since).into_response())
}
