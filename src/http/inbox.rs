//! A user's in-app inbox: the push notifications sent with `"inApp": true`. Every change
//! is also sent live to the user's connections (`notification:read`, `:deleted`,
//! `:cleared`).

use super::auth::Authenticated;
use super::error::answers::{InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody};
use super::{AppState, UserPath};
use crate::domain::TenantId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// The inbox routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{user_id}/inbox", get(list).delete(clear))
        .route("/v1/users/{user_id}/inbox/{id}/read", post(mark_read))
        .route("/v1/users/{user_id}/inbox/{id}", delete(remove))
}

/// Items answered at most.
const LIMIT: i64 = 200;

/// One in-app notification.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxView {
    /// The notification's id (the push's).
    pub id: String,
    /// What it says: `title`, `body`, `data`.
    #[schema(value_type = Object)]
    pub notification: Value,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
    /// When the user read it; null while unread.
    pub read_at: Option<DateTime<Utc>>,
}

/// A user's inbox.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxList {
    /// Newest first (at most 200).
    pub items: Vec<InboxView>,
    /// How many of them are unread.
    pub unread: usize,
}

/// The user's in-app notifications, newest first.
#[utoipa::path(get, path = "/v1/users/{userId}/inbox", tag = "realtime", security(("api_key" = [])),
    params(UserPath),
    responses((status = 200, body = InboxList), KeyRefusals, InputRefusals))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(user): Path<String>,
) -> Result<Json<InboxList>, ApiError> {
    let user = super::user_in_path(&user)?;
    let user = user.as_str();
    let items: Vec<InboxView> = state
        .stores
        .inbox
        .inbox(&tenant, user, LIMIT)
        .await?
        .into_iter()
        .map(|item| InboxView {
            notification: serde_json::from_str(&item.payload).unwrap_or(Value::Null),
            id: item.id,
            created_at: item.created_at,
            read_at: item.read_at,
        })
        .collect();
    let unread = items.iter().filter(|i| i.read_at.is_none()).count();
    Ok(Json(InboxList { items, unread }))
}

/// Applies a change and pokes the user's connections; 404 when nothing changed.
async fn change(
    state: &AppState,
    tenant: &TenantId,
    user: &str,
    id: Option<&str>,
    read: bool,
) -> Result<StatusCode, ApiError> {
    let user = super::user_in_path(user)?;
    let user = user.as_str();
    let changed = state
        .stores
        .inbox
        .change_inbox(tenant, user, id, read)
        .await?;
    if changed > 0 {
        state.realtime.poke(tenant, &[user]).await;
    }
    match (id, changed) {
        (Some(id), 0) => Err(ApiError::NotFound(format!(
            "unread inbox item {id} of user {user}"
        ))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// Marks one in-app notification read.
#[utoipa::path(post, path = "/v1/users/{userId}/inbox/{id}/read", tag = "realtime", security(("api_key" = [])),
    params(UserPath, ("id" = String, Path, description = "The notification")),
    responses((status = 204), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn mark_read(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path((user, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    change(&state, &tenant, &user, Some(&id), true).await
}

/// Deletes one in-app notification.
#[utoipa::path(delete, path = "/v1/users/{userId}/inbox/{id}", tag = "realtime", security(("api_key" = [])),
    params(UserPath, ("id" = String, Path, description = "The notification")),
    responses((status = 204), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn remove(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path((user, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    change(&state, &tenant, &user, Some(&id), false).await
}

/// Deletes all of a user's in-app notifications.
#[utoipa::path(delete, path = "/v1/users/{userId}/inbox", tag = "realtime", security(("api_key" = [])),
    params(UserPath),
    responses((status = 204), KeyRefusals, InputRefusals))]
pub async fn clear(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&state, &tenant, &user, None, false).await
}
