//! Real-time access: a tenant asks for a short-lived token for one of its users; the
//! user's browser or app opens `GET /v1/realtime?token=...` as a WebSocket with it.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use crate::domain::UserId;
use crate::domain::parse::{FieldError, FieldErrors, Fields};
use crate::realtime::socket;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
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
}

/// The body of `POST /v1/realtime/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct TokenRequest {
    /// The user the socket is for.
    user_id: String,
    /// The token's lifetime in seconds (default `realtime.token_ttl`).
    ttl_seconds: Option<u32>,
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
pub struct ConnectParams {
    /// A token from `POST /v1/realtime/tokens`.
    token: Option<String>,
    /// The cursor of the last frame the client has; what came after is replayed first.
    since: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(FieldErrors(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }]))
}

/// Issues a token that opens a WebSocket for one user of the key's tenant.
#[utoipa::path(post, path = "/v1/realtime/tokens", tag = "realtime", security(("api_key" = [])),
    request_body = TokenRequest,
    responses((status = 201, body = IssuedToken), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
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
    responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn connect(
    State(state): State<AppState>,
    query: Result<Query<ConnectParams>, QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| invalid("query", e.body_text()))?;
    let token = params
        .token
        .ok_or_else(|| ApiError::Unauthorized("a real-time token is required (?token=)".into()))?;
    let (tenant, user) = state
        .realtime
        .check(&token)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let since = params
        .since
        .map(|since| {
            since
                .parse::<i64>()
                .ok()
                .filter(|c| *c >= 0)
                .ok_or_else(|| invalid("since", "must be the cursor of a frame"))
        })
        .transpose()?;
    let realtime = state.realtime.clone();
    Ok(upgrade.on_upgrade(move |socket| socket::run(realtime, tenant, user, since, socket)))
}
