//! A tenant's delivery provider settings: its own SMTP relay (and, with the push channel,
//! its APNs and FCM credentials). Secrets are write-only: answers show them redacted.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use crate::channels::email::RelaySettings;
use crate::domain::parse::{FieldError, FieldErrors};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use serde_json::Value;

/// The provider routes.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/providers/smtp",
        put(put_smtp).get(get_smtp).delete(delete_smtp),
    )
}

const SMTP: &str = "smtp";

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(FieldErrors(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }]))
}

/// Sets the tenant's own SMTP relay, used instead of the configured one. Answers the
/// settings with the password redacted.
#[utoipa::path(put, path = "/v1/providers/smtp", tag = "providers", security(("api_key" = [])),
    request_body(content = Object, description = "`host`, optional `port`, `security` (`starttls`, `tls` or `plain`), `username`, `password` and `from`"),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let relay: RelaySettings =
        serde_json::from_value(body).map_err(|e| invalid("", e.to_string()))?;
    relay.check().map_err(|e| invalid(e.field, e.message))?;
    state
        .tenancy
        .store()
        .put_provider(&tenant, SMTP, &relay.to_stored().to_string())
        .await?;
    Ok(Json(relay.redacted()))
}

/// The tenant's own SMTP relay, password redacted.
#[utoipa::path(get, path = "/v1/providers/smtp", tag = "providers", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let stored = state.tenancy.store().provider(&tenant, SMTP).await?;
    let (json, _) = stored.ok_or_else(|| ApiError::NotFound("SMTP settings".into()))?;
    let relay: RelaySettings = serde_json::from_str(&json)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored SMTP settings: {e}")))?;
    Ok(Json(relay.redacted()))
}

/// Removes the tenant's own relay: its email goes through the configured one again.
#[utoipa::path(delete, path = "/v1/providers/smtp", tag = "providers", security(("api_key" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<StatusCode, ApiError> {
    if state.tenancy.store().delete_provider(&tenant, SMTP).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("SMTP settings".into()))
    }
}
