//! Who is calling: a tenant's API key for `/v1`, the admin token for `/admin`.

use super::AppState;
use super::error::ApiError;
use crate::domain::TenantId;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

/// The tenant whose API key authenticated the request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub TenantId);

/// A request made with the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::Unauthorized(
                "a valid API key is required: Authorization: Bearer <key>".into(),
            )
        })?;
        Ok(Authenticated(state.tenancy.authenticate(key).await?))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.admin_token else {
            return Err(ApiError::Forbidden(
                "the admin API is off: set admin.token (HERALD__ADMIN__TOKEN) to use it".into(),
            ));
        };
        let presented = bearer(parts).unwrap_or_default();
        let equal: bool = presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes())
            .into();
        if equal {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized(
                "the admin token is required: Authorization: Bearer <token>".into(),
            ))
        }
    }
}
