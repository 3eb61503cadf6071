//! The device registry: where a user's pushes go. A token belongs to one user of a tenant
//! at a time; registering it for another user moves it.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::answers::{BodyRefusals, InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody};
use super::{UserPath, user_in_path};
use crate::domain::parse::{self, Fields};
use crate::store::Device;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The device routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users/{user_id}/devices", put(register).get(list))
        .route("/v1/users/{user_id}/devices/{token}", delete(remove))
}

/// Longest device token accepted (FCM tokens run to about 200 characters).
const TOKEN_MAX: usize = 4096;

/// The body of `PUT /v1/users/{userId}/devices`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct DeviceBody {
    /// `ios` (APNs), `android` or `web` (FCM).
    #[schema(schema_with = platform)]
    platform: String,
    /// The provider's token for the device: no spaces or '/'.
    #[schema(schema_with = device_token)]
    token: String,
}

/// A user's devices.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    /// Oldest first.
    pub items: Vec<Device>,
}

/// The `{token}` of `DELETE /v1/users/{userId}/devices/{token}`, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the parameter.
struct DeviceTokenPath {
    /// The device's token.
    #[param(schema_with = device_token)]
    token: String,
}

fn platform() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["ios", "android", "web"]))
        .into()
}

fn device_token() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .min_length(Some(1))
        .max_length(Some(TOKEN_MAX))
        .pattern(Some(TOKEN_PATTERN))
        .into()
}

/// What a device token may hold, as the OpenAPI description states it.
const TOKEN_PATTERN: &str = "^[^\\s/\\u0000-\\u001f\\u007f-\\u009f]*$";

/// Registers a device for a user (or moves it to this user). 201 when it is new to the
/// user, 200 when it was theirs already.
#[utoipa::path(put, path = "/v1/users/{userId}/devices", tag = "devices", security(("api_key" = [])),
    params(UserPath),
    request_body = DeviceBody,
    responses((status = 200, body = Device), (status = 201, body = Device),
        KeyRefusals, BodyRefusals))]
pub async fn register(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Device>), ApiError> {
    let user = user_in_path(&user_id)?;
    let mut fields = Fields::of(&body)?;
    let platform = fields.required::<String>("platform");
    if let Some(platform) = &platform
        && !["ios", "android", "web"].contains(&platform.as_str())
    {
        fields.error("platform", "must be one of ios, android, web");
    }
    let token = match fields.raw("token") {
        Some(value) => match parse::text(value, TOKEN_MAX, false) {
            Ok(token) if !token.contains(char::is_whitespace) && !token.contains('/') => {
                Some(token)
            }
            Ok(_) => {
                fields.error("token", "must not contain spaces or '/'");
                None
            }
            Err(message) => {
                fields.error("token", message);
                None
            }
        },
        None => {
            fields.error("token", "is required");
            None
        }
    };
    let (platform, token) = fields.finish(|| Some((platform?, token?)))?;
    let store = &state.stores.devices;
    let had = store
        .devices(&tenant, user.as_str())
        .await?
        .iter()
        .any(|d| d.token == token);
    let device = store
        .register_device(&tenant, user.as_str(), &platform, &token)
        .await?;
    let status = if had {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(device)))
}

/// A user's devices.
#[utoipa::path(get, path = "/v1/users/{userId}/devices", tag = "devices", security(("api_key" = [])),
    params(UserPath),
    responses((status = 200, body = DeviceList), KeyRefusals, InputRefusals))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<DeviceList>, ApiError> {
    let user = user_in_path(&user_id)?;
    let items = state.stores.devices.devices(&tenant, user.as_str()).await?;
    Ok(Json(DeviceList { items }))
}

/// Removes one of a user's devices.
#[utoipa::path(delete, path = "/v1/users/{userId}/devices/{token}", tag = "devices", security(("api_key" = [])),
    params(UserPath, DeviceTokenPath),
    responses((status = 204), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn remove(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path((user_id, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = user_in_path(&user_id)?;
    if state
        .stores
        .devices
        .remove_device(&tenant, &token, Some(user.as_str()))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "device {token} of user {user_id}"
        )))
    }
}
