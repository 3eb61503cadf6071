//! The contract's error shape, in one place:
//! `{"error": {"code": "...", "message": "...", "details": [...]}}`.

use crate::domain::parse::{FieldError, FieldErrors};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use utoipa::ToSchema;

/// Everything the API answers with an error status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (400).
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// No valid API key (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The key may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The resource exists already (409).
    #[error("{0}")]
    Conflict(String),
    /// No route has this path (404).
    #[error("no resource at {0}")]
    NotFound(String),
    /// The route is a WebSocket and the request is not an upgrade (426).
    #[error("{0}")]
    UpgradeRequired(String),
    /// The route exists but not with this method (405).
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The body exceeds the limit (413).
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not declared as JSON (415).
    #[error("the body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// Fields failed to parse (422).
    #[error("{} field(s) are invalid", .0.0.len())]
    Validation(FieldErrors),
    /// The tenant sends faster than its limit (429).
    #[error("this tenant is over its rate limit; try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    /// The broker is full or down (503).
    #[error("{message}")]
    Unavailable {
        /// What happened, safe to show.
        message: String,
        /// When to try again.
        retry_after: Duration,
        /// Per-item details, for batches.
        details: Vec<Value>,
    },
    /// A bug or an unexpected failure (500): logged with its cause, shown opaque.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`validation_failed`, `queue_unavailable`, ...).
    pub code: &'static str,
    /// A sentence for humans.
    pub message: String,
    /// For 422, one entry per invalid field (`{"field", "message"}`); for a batch that
    /// was only partly queued, one entry per event.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Value>,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

/// A 422 about one field.
pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(FieldErrors(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }]))
}

impl From<crate::tenants::AuthError> for ApiError {
    fn from(e: crate::tenants::AuthError) -> Self {
        match e {
            crate::tenants::AuthError::Unauthorized => ApiError::Unauthorized(e.to_string()),
            crate::tenants::AuthError::Store(cause) => ApiError::Internal(cause.into()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(what) => {
                ApiError::Conflict(format!("{what} already exists"))
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<crate::idempotency::IdempotencyError> for ApiError {
    fn from(e: crate::idempotency::IdempotencyError) -> Self {
        use crate::idempotency::IdempotencyError;
        match e {
            IdempotencyError::Mismatch(_) => ApiError::Validation(FieldErrors(vec![FieldError {
                field: "Idempotency-Key".into(),
                message: e.to_string(),
            }])),
            IdempotencyError::InProgress(_) => ApiError::Conflict(e.to_string()),
            IdempotencyError::Store(cause) => ApiError::Internal(cause.into()),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        ApiError::Validation(errors)
    }
}

fn field_detail(e: FieldError) -> Value {
    serde_json::to_value(e).expect("a field error serializes")
}

impl ApiError {
    /// The error as the contract's body says it, for an answer that is not an HTTP
    /// response (a socket's `message:error`).
    pub fn into_body(self) -> ErrorBody {
        self.into_parts().1
    }

    /// Its status and body.
    fn into_parts(self) -> (StatusCode, ErrorBody) {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "something went wrong on our side; it has been logged".to_owned()
            }
            ApiError::Validation(errors) => {
                format!("{} field(s) are invalid: {errors}", errors.0.len())
            }
            other => other.to_string(),
        };
        let details = match self {
            ApiError::Validation(errors) => errors.0.into_iter().map(field_detail).collect(),
            ApiError::Unavailable { details, .. } => details,
            _ => Vec::new(),
        };
        let error = ErrorDetail {
            code,
            message,
            details,
        };
        (status, ErrorBody { error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            ApiError::Unavailable { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            // Round up: a client that waits what it is told must get through.
            ApiError::RateLimited(wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            _ => None,
        };
        let upgrade = matches!(self, ApiError::UpgradeRequired(_));
        let (status, body) = self.into_parts();
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if upgrade {
            // A 426 names the protocol to upgrade to (RFC 9110).
            response
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        response
    }
}

/// The error answers routes share, for the OpenAPI description: each route lists the sets
/// it can answer (`responses(..., KeyRefusals, BodyRefusals)`), so that every status code
/// a route can answer is documented once, in the contract's error shape.
pub mod answers {
    use std::collections::BTreeMap;
    use utoipa::IntoResponses;
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::response::ResponseBuilder;
    use utoipa::openapi::schema::ObjectBuilder;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, Type};

    /// One error answer: `ErrorBody`, with `Retry-After` when `retry` is set.
    fn error(description: &str, retry: bool) -> RefOr<Response> {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
        if retry {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            );
        }
        response.build().into()
    }

    fn answers(list: &[(&str, &str, bool)]) -> BTreeMap<String, RefOr<Response>> {
        list.iter()
            .map(|(status, description, retry)| ((*status).to_owned(), error(description, *retry)))
            .collect()
    }

    /// Declares a set of error answers, each `(status, description, with Retry-After)`.
    macro_rules! answer_set {
        ($(#[$doc:meta])* $name:ident: $($status:literal => $description:literal $(, $retry:ident)?);+ $(;)?) => {
            $(#[$doc])*
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    answers(&[$(($status, $description, answer_set!(@retry $($retry)?))),+])
                }
            }
        };
        (@retry retry) => { true };
        (@retry) => { false };
    }

    answer_set!(
        /// A route behind a tenant's API key or the admin token.
        KeyRefusals: "401" => "No valid API key (or admin token)"
    );

    answer_set!(
        /// A route that reads a JSON body.
        BodyRefusals:
            "400" => "The body is not valid JSON";
            "413" => "The body is larger than http.body_limit_bytes";
            "415" => "The body is not sent as application/json";
            "422" => "Invalid fields; details name each one"
    );

    answer_set!(
        /// A route about one stored chat message, behind a tenant's API key.
        MessageRefusals:
            "401" => "No valid API key (or admin token)";
            "404" => "The tenant has no chat message of this messageId"
    );

    answer_set!(
        /// A route whose query or path is checked.
        InputRefusals: "422" => "Invalid fields; details name each one"
    );

    answer_set!(
        /// A route that queues events.
        SendRefusals:
            "403" => "A tenantId differs from the API key's tenant";
            "409" => "A send with this Idempotency-Key is still being queued";
            "429" => "The tenant is over its rate limit; see Retry-After", retry;
            "503" => "Not queued (the broker is full, blocked or down), or not confirmed in \
                      time; details give each event's id and status (queued, rejected or \
                      unconfirmed); see Retry-After", retry
    );
}
