//! A tenant's delivery provider settings: its own SMTP relay, APNs key and FCM service
//! account. Secrets are write-only: answers show them redacted.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use crate::channels::email::RelaySettings;
use crate::channels::push::{ApnsCredentials, FcmCredentials};
use crate::domain::parse::{FieldError, FieldErrors};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use serde_json::Value;

/// The provider routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/providers/smtp",
            put(put_smtp).get(get_smtp).delete(delete_smtp),
        )
        .route(
            "/v1/providers/apns",
            put(put_apns).get(get_apns).delete(delete_apns),
        )
        .route(
            "/v1/providers/fcm",
            put(put_fcm).get(get_fcm).delete(delete_fcm),
        )
}

const SMTP: &str = "smtp";
const APNS: &str = "apns";
const FCM: &str = "fcm";

/// Reads the tenant's stored settings of `provider` as `T`.
async fn stored<T: serde::de::DeserializeOwned>(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    provider: &str,
) -> Result<T, ApiError> {
    let stored = state.tenancy.store().provider(tenant, provider).await?;
    let (json, _) = stored
        .ok_or_else(|| ApiError::NotFound(format!("{} settings", provider.to_uppercase())))?;
    serde_json::from_str(&json)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored {provider} settings: {e}")))
}

/// Removes the tenant's settings of `provider`.
async fn remove(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    provider: &str,
) -> Result<StatusCode, ApiError> {
    if state
        .tenancy
        .store()
        .delete_provider(tenant, provider)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "{} settings",
            provider.to_uppercase()
        )))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(FieldErrors(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }]))
}

/// Settings of one provider as the API takes and answers them.
trait ProviderSettings: serde::de::DeserializeOwned {
    /// Its name in paths and in the store.
    const NAME: &'static str;
    /// Checks what can be checked without the provider: the bad field and why.
    fn check(&self) -> Result<(), (&'static str, String)>;
    /// As stored, secrets included.
    fn to_stored(&self) -> Value;
    /// As answered, secrets redacted.
    fn redacted(&self) -> Value;
}

impl ProviderSettings for RelaySettings {
    const NAME: &'static str = SMTP;
    fn check(&self) -> Result<(), (&'static str, String)> {
        RelaySettings::check(self).map_err(|e| (e.field, e.message))
    }
    fn to_stored(&self) -> Value {
        RelaySettings::to_stored(self)
    }
    fn redacted(&self) -> Value {
        RelaySettings::redacted(self)
    }
}

impl ProviderSettings for ApnsCredentials {
    const NAME: &'static str = APNS;
    fn check(&self) -> Result<(), (&'static str, String)> {
        ApnsCredentials::check(self).map_err(|e| (e.field, e.message))
    }
    fn to_stored(&self) -> Value {
        ApnsCredentials::to_stored(self)
    }
    fn redacted(&self) -> Value {
        ApnsCredentials::redacted(self)
    }
}

impl ProviderSettings for FcmCredentials {
    const NAME: &'static str = FCM;
    fn check(&self) -> Result<(), (&'static str, String)> {
        FcmCredentials::check(self).map_err(|e| (e.field, e.message))
    }
    fn to_stored(&self) -> Value {
        FcmCredentials::to_stored(self)
    }
    fn redacted(&self) -> Value {
        FcmCredentials::redacted(self)
    }
}

/// Parses, checks and stores the tenant's settings of `T`; answers them redacted.
async fn set<T: ProviderSettings>(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    body: Value,
) -> Result<Json<Value>, ApiError> {
    let settings: T = serde_json::from_value(body).map_err(|e| invalid("", e.to_string()))?;
    settings
        .check()
        .map_err(|(field, message)| invalid(field, message))?;
    state
        .tenancy
        .store()
        .put_provider(tenant, T::NAME, &settings.to_stored().to_string())
        .await?;
    Ok(Json(settings.redacted()))
}

/// The tenant's settings of `T`, redacted.
async fn show<T: ProviderSettings>(
    state: &AppState,
    tenant: &crate::domain::TenantId,
) -> Result<Json<Value>, ApiError> {
    let settings: T = stored(state, tenant, T::NAME).await?;
    Ok(Json(settings.redacted()))
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
    set::<RelaySettings>(&state, &tenant, body).await
}

/// The tenant's own SMTP relay, password redacted.
#[utoipa::path(get, path = "/v1/providers/smtp", tag = "providers", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Value>, ApiError> {
    show::<RelaySettings>(&state, &tenant).await
}

/// Removes the tenant's own relay: its email goes through the configured one again.
#[utoipa::path(delete, path = "/v1/providers/smtp", tag = "providers", security(("api_key" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<StatusCode, ApiError> {
    remove(&state, &tenant, SMTP).await
}

/// Sets the tenant's APNs key (token authentication) and app. Answers them with the key
/// redacted.
#[utoipa::path(put, path = "/v1/providers/apns", tag = "providers", security(("api_key" = [])),
    request_body(content = Object, description = "`keyId`, `teamId`, `topic` (the bundle id), `privateKey` (the .p8 file's contents), `environment` (`production` or `sandbox`)"),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_apns(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    set::<ApnsCredentials>(&state, &tenant, body).await
}

/// The tenant's APNs settings, key redacted.
#[utoipa::path(get, path = "/v1/providers/apns", tag = "providers", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_apns(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Value>, ApiError> {
    show::<ApnsCredentials>(&state, &tenant).await
}

/// Removes the tenant's APNs settings: its iOS pushes use the configured ones again.
#[utoipa::path(delete, path = "/v1/providers/apns", tag = "providers", security(("api_key" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_apns(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<StatusCode, ApiError> {
    remove(&state, &tenant, APNS).await
}

/// Sets the tenant's FCM service account: the JSON file Google issues, as it is. Answers
/// it with the key redacted.
#[utoipa::path(put, path = "/v1/providers/fcm", tag = "providers", security(("api_key" = [])),
    request_body(content = Object, description = "A Google service account JSON: `project_id`, `client_email`, `private_key`, optional `token_uri`"),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_fcm(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    set::<FcmCredentials>(&state, &tenant, body).await
}

/// The tenant's FCM service account, key redacted.
#[utoipa::path(get, path = "/v1/providers/fcm", tag = "providers", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_fcm(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Value>, ApiError> {
    show::<FcmCredentials>(&state, &tenant).await
}

/// Removes the tenant's FCM service account.
#[utoipa::path(delete, path = "/v1/providers/fcm", tag = "providers", security(("api_key" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_fcm(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<StatusCode, ApiError> {
    remove(&state, &tenant, FCM).await
}
