//! The admin API: tenants and their keys. Every route needs the admin token.

use super::AppState;
use super::auth::Admin;
use super::body::JsonBody;
use super::error::answers::{BodyRefusals, InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody};
use crate::domain::parse::{FieldError, FieldErrors, Fields, FromJson};
use crate::domain::{TENANT_NAME_MAX, TenantId, check_tenant_name};
use crate::store::{ApiKeyInfo, Tenant};
use crate::tenants::NewApiKey;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/tenants", post(create_tenant))
        .route("/admin/tenants/{tenant}/keys", post(add_key).get(list_keys))
        .route("/admin/tenants/{tenant}/keys/{key_id}", delete(revoke_key))
}

/// A new key, with the key itself: shown this once and never again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key's public id.
    pub id: String,
    /// The key, for `Authorization: Bearer <key>`.
    pub key: String,
}

impl From<&NewApiKey> for CreatedKey {
    fn from(k: &NewApiKey) -> Self {
        CreatedKey {
            id: k.id.clone(),
            key: k.key.expose_secret().to_owned(),
        }
    }
}

/// A new tenant and its first key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its first key, shown once.
    pub api_key: CreatedKey,
}

/// A tenant's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys, by id only.
    pub items: Vec<ApiKeyInfo>,
}

/// A tenant to create: `name`, a name for people (1 to 200 printable characters, not
/// only spaces), and `id`, what its events carry as `tenantId` (1 to 64 of
/// `A-Z a-z 0-9 _ - .`, or a whole number). Without an `id` the name serves as one, so
/// it must then be a valid id itself.
pub struct NewTenant;

impl utoipa::PartialSchema for NewTenant {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use crate::domain::schema;
        use utoipa::openapi::Type;
        use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder};
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(TENANT_NAME_MAX))
            .pattern(Some(schema::NOT_ONLY_SPACES));
        // Either an id is given, or the name must be one.
        let id_or_name_as_id = AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .property("id", schema::tenant_id())
                    .required("id"),
            )
            .item(
                ObjectBuilder::new().property(
                    "name",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(schema::TENANT_ID)),
                ),
            );
        let fields = ObjectBuilder::new()
            .property("name", name)
            .required("name")
            .property("id", schema::optional::tenant_id());
        AllOfBuilder::new()
            .description(Some(
                "A tenant to create; without an `id` the name serves as one.",
            ))
            .item(fields)
            .item(id_or_name_as_id)
            .into()
    }
}

impl ToSchema for NewTenant {}

fn tenant_path(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::NotFound(format!("tenant {raw}")))
}

async fn existing_tenant(state: &AppState, raw: &str) -> Result<TenantId, ApiError> {
    let id = tenant_path(raw)?;
    match state.tenancy.store().tenant(&id).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::NotFound(format!("tenant {raw}"))),
    }
}

/// Creates a tenant and answers its first key, once.
#[utoipa::path(post, path = "/admin/tenants", tag = "admin", request_body = NewTenant,
    security(("admin_token" = [])),
    responses((status = 201, body = CreatedTenant), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), KeyRefusals, BodyRefusals))]
pub async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut fields = Fields::of(&body)?;
    let name: Option<String> = fields.required("name");
    if let Some(Err(message)) = name.as_deref().map(check_tenant_name) {
        fields.error("name", message);
    }
    let id: Option<TenantId> = fields.optional("id");
    let (name, id) = fields.finish(|| {
        let name = name?;
        Some((
            name.clone(),
            id.map_or_else(|| TenantId::from_json(&name.clone().into()), Ok),
        ))
    })?;
    let id = id.map_err(|message| {
        FieldErrors(vec![FieldError {
            field: "id".into(),
            message: format!("the name cannot serve as the id ({message}); give an id"),
        }])
    })?;
    let (tenant, key) = state.tenancy.create_tenant(&id, &name).await?;
    tracing::info!(tenant = %tenant.id, key = %key.id, "tenant created");
    let created = CreatedTenant {
        api_key: CreatedKey::from(&key),
        tenant,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Adds a key to a tenant and answers it, once.
#[utoipa::path(post, path = "/admin/tenants/{tenant}/keys", tag = "admin", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "The tenant's id")),
    responses((status = 201, body = CreatedKey), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn add_key(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = existing_tenant(&state, &tenant).await?;
    let (_, key) = state.tenancy.add_key(&tenant).await?;
    tracing::info!(tenant = %tenant, key = %key.id, "API key added");
    Ok((StatusCode::CREATED, Json(CreatedKey::from(&key))).into_response())
}

/// Lists a tenant's keys by id.
#[utoipa::path(get, path = "/admin/tenants/{tenant}/keys", tag = "admin", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "The tenant's id")),
    responses((status = 200, body = KeyList), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn list_keys(
    _: Admin,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<KeyList>, ApiError> {
    let tenant = existing_tenant(&state, &tenant).await?;
    let items = state.tenancy.store().api_keys(&tenant).await?;
    Ok(Json(KeyList { items }))
}

/// Revokes a key; requests with it are refused within a second, on every instance.
#[utoipa::path(delete, path = "/admin/tenants/{tenant}/keys/{keyId}", tag = "admin", security(("admin_token" = [])),
    params(("tenant" = String, Path, description = "The tenant's id"), ("keyId" = String, Path, description = "The key's id (`hk_...`), not the key itself")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    Path((tenant, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant_path(&tenant)?;
    if state.tenancy.store().revoke_api_key(&tenant, &key).await? {
        tracing::info!(tenant = %tenant, key = %key, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("key {key}")))
    }
}
