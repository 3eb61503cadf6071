//! A tenant's delivery provider settings: its own SMTP relay, APNs key and FCM service
//! account. Secrets are write-only: answers show them redacted.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::answers::{BodyRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody, invalid};
use crate::channels::email::RelaySettings;
use crate::channels::push::{ApnsCredentials, FcmCredentials};
use crate::domain::schema;
use crate::outbound::OutboundPolicy;
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

/// The body of `PUT /v1/providers/smtp`: the tenant's own relay.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Documents the body, which `RelaySettings` reads.
pub struct SmtpBody {
    /// The relay's host name; it must resolve to a public address unless the operator
    /// allows private ones (`providers.allow_private_addresses`).
    host: String,
    /// Its port; by default the one of `security` (587, 465 or 25).
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<u16>,
    /// `starttls` (the default), `tls` or `plain` (refused with credentials unless the
    /// relay is on this machine).
    #[schema(value_type = Option<String>, pattern = "^(starttls|tls|plain)$")]
    security: Option<String>,
    /// The user to authenticate as.
    username: Option<String>,
    /// That user's password (write-only: answered redacted).
    #[schema(write_only)]
    password: Option<String>,
    /// The sender of emails that name none, as a mailbox (`Acme <noreply@acme.example>`).
    from: Option<String>,
}

/// The body of `PUT /v1/providers/apns`: a token-authentication key and the app.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Documents the body, which `ApnsCredentials` reads.
pub struct ApnsBody {
    /// The key's id, from Apple's developer account (`key_id` is read too).
    #[schema(schema_with = schema::word::<200>)]
    key_id: String,
    /// The developer team's id (`team_id` is read too).
    #[schema(schema_with = schema::word::<200>)]
    team_id: String,
    /// The app's bundle id: the `apns-topic` of every push.
    #[schema(schema_with = schema::word::<200>)]
    topic: String,
    /// The `.p8` file's contents: a PKCS#8 PEM P-256 key (write-only; `private_key` is
    /// read too).
    #[schema(write_only)]
    private_key: String,
    /// `production` (the default) or `sandbox`.
    #[schema(value_type = Option<String>, pattern = "^(production|sandbox)$")]
    environment: Option<String>,
}

/// The body of `PUT /v1/providers/fcm`: a Google service account's JSON file, as Google
/// issues it (its other fields are ignored).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // Documents the body, which `FcmCredentials` reads.
pub struct FcmBody {
    /// The Firebase project (`projectId` is read too).
    #[schema(schema_with = schema::word::<200>)]
    project_id: String,
    /// The service account's address.
    client_email: String,
    /// Its RSA key, PKCS#8 PEM (write-only).
    #[schema(write_only)]
    private_key: String,
    /// Google's token endpoint: https on oauth2.googleapis.com, www.googleapis.com or
    /// accounts.google.com, unless the operator allows others.
    token_uri: Option<String>,
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
    let stored = state.stores.providers.provider(tenant, provider).await?;
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
        .stores
        .providers
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

/// The field a settings body failed to deserialize at: its path, or, for a missing or
/// unknown field (reported at the top), the field serde names.
fn field_of(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if path != "." && !path.is_empty() {
        return path;
    }
    let message = e.inner().to_string();
    message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"))
        .unwrap_or("body")
        .to_owned()
}

/// serde's message as the API words errors: what is wrong, without serde's position (the
/// field is named apart) and with lists as prose.
fn sentence(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = match message.rsplit_once(" at line ") {
        Some((head, _)) => head.to_owned(),
        None => message,
    };
    message.replace('`', "'")
}

/// Settings of one provider as the API takes and answers them.
trait ProviderSettings: serde::de::DeserializeOwned {
    /// Its name in paths and in the store.
    const NAME: &'static str;
    /// Checks what can be checked without the provider: the bad field and why.
    fn check(&self) -> Result<(), (&'static str, String)>;
    /// Checks that what the settings make Herald connect to is where `outbound` allows.
    async fn check_outbound(
        &self,
        _outbound: &OutboundPolicy,
    ) -> Result<(), (&'static str, String)> {
        Ok(())
    }
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
    async fn check_outbound(
        &self,
        outbound: &OutboundPolicy,
    ) -> Result<(), (&'static str, String)> {
        outbound
            .check_host(&self.host, self.port())
            .await
            .map_err(|refusal| ("host", refusal.to_string()))
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
    async fn check_outbound(
        &self,
        outbound: &OutboundPolicy,
    ) -> Result<(), (&'static str, String)> {
        self.check_token_uri(outbound)
            .map_err(|e| (e.field, e.message))
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
    let settings: T = serde_path_to_error::deserialize(body).map_err(|e| {
        let field = field_of(&e);
        invalid(&field, sentence(e.inner()))
    })?;
    settings
        .check()
        .map_err(|(field, message)| invalid(field, message))?;
    settings
        .check_outbound(&state.outbound)
        .await
        .map_err(|(field, message)| invalid(field, message))?;
    state
        .stores
        .providers
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
    request_body = SmtpBody,
    responses((status = 200, body = Object), KeyRefusals, BodyRefusals))]
pub async fn put_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    set::<RelaySettings>(&state, &tenant, body).await
}

/// The tenant's own SMTP relay, password redacted.
#[utoipa::path(get, path = "/v1/providers/smtp", tag = "providers", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), KeyRefusals))]
pub async fn get_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Value>, ApiError> {
    show::<RelaySettings>(&state, &tenant).await
}

/// Removes the tenant's own relay: its email goes through the configured one again.
#[utoipa::path(delete, path = "/v1/providers/smtp", tag = "providers", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), KeyRefusals))]
pub async fn delete_smtp(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<StatusCode, ApiError> {
    remove(&state, &tenant, SMTP).await
}

/// Sets the tenant's APNs key (token authentication) and app. Answers them with the key
/// redacted.
#[utoipa::path(put, path = "/v1/providers/apns", tag = "providers", security(("api_key" = [])),
    request_body = ApnsBody,
    responses((status = 200, body = Object), KeyRefusals, BodyRefusals))]
pub async fn put_apns(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    set::<ApnsCredentials>(&state, &tenant, body).await
}

/// The tenant's APNs settings, key redacted.
#[utoipa::path(get, path = "/v1/providers/apns", tag = "providers", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), KeyRefusals))]
pub async fn get_apns(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Value>, ApiError> {
    show::<ApnsCredentials>(&state, &tenant).await
}

/// Removes the tenant's APNs settings: its iOS pushes use the configured ones again.
#[utoipa::path(delete, path = "/v1/providers/apns", tag = "providers", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), KeyRefusals))]
pub async fn delete_apns(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<StatusCode, ApiError> {
    remove(&state, &tenant, APNS).await
}

/// Sets the tenant's FCM service account: the JSON file Google issues, as it is. Answers
/// it with the key redacted.
#[utoipa::path(put, path = "/v1/providers/fcm", tag = "providers", security(("api_key" = [])),
    request_body = FcmBody,
    responses((status = 200, body = Object), KeyRefusals, BodyRefusals))]
pub async fn put_fcm(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    set::<FcmCredentials>(&state, &tenant, body).await
}

/// The tenant's FCM service account, key redacted.
#[utoipa::path(get, path = "/v1/providers/fcm", tag = "providers", security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), KeyRefusals))]
pub async fn get_fcm(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Value>, ApiError> {
    show::<FcmCredentials>(&state, &tenant).await
}

/// Removes the tenant's FCM service account.
#[utoipa::path(delete, path = "/v1/providers/fcm", tag = "providers", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), KeyRefusals))]
pub async fn delete_fcm(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<StatusCode, ApiError> {
    remove(&state, &tenant, FCM).await
}
