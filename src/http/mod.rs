//! The HTTP API: one router per resource, merged here, with the contract's error shape for
//! unknown routes and wrong methods, and request metrics.

mod admin;
mod audit;
mod auth;
mod body;
mod conversations;
pub mod cors;
mod devices;
mod docs;
pub mod error;
mod health;
mod inbox;
mod notifications;
mod providers;
mod queues;
mod realtime;
mod send;
pub use send::SocketSends;
mod templates;
mod updates;

pub use docs::ApiDoc;

use crate::broker::{Broker, Topology};
use crate::telemetry::{Metrics, RequestLabels, RouteLabels};
use crate::tenants::Tenancy;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use error::ApiError;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where events are queued.
    pub broker: Arc<dyn Broker>,
    /// Which exchange each kind is published to.
    pub topology: Arc<Topology>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Largest body accepted, in bytes.
    pub body_limit: usize,
    /// The `Retry-After` of a 503.
    pub retry_after: Duration,
    /// Tenants and their keys.
    pub tenancy: Arc<Tenancy>,
    /// The store's concerns, each handler reaching the one it needs.
    pub stores: crate::store::Stores,
    /// The token of the admin API; `None` turns it off.
    pub admin_token: Option<SecretString>,
    /// Where sends are accepted.
    pub ingress: Arc<crate::ingress::Ingress>,
    /// Email templates, compiled.
    pub templates: Arc<crate::templates::Templates>,
    /// Real-time delivery.
    pub realtime: Arc<crate::realtime::Realtime>,
    /// Where tenants' own providers may be.
    pub outbound: crate::outbound::OutboundPolicy,
    /// Which browser origins may call the API.
    pub allowed_origins: cors::AllowedOrigins,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let cors = state.allowed_origins.layer();
    let api = Router::new()
        .merge(send::router())
        .merge(audit::router())
        .merge(admin::router())
        .merge(queues::router())
        .merge(notifications::router())
        .merge(templates::router())
        .merge(providers::router())
        .merge(devices::router())
        .merge(realtime::router())
        .merge(conversations::router())
        .merge(updates::router())
        .merge(inbox::router())
        .merge(health::router())
        .merge(docs::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        // Socket.IO serves `/socket.io/` itself (polling and its WebSocket), before routing.
        .layer(crate::realtime::socket_io::layer(state.realtime.clone()));
    // Outermost, so that a preflight (Socket.IO's long-polling's too) is answered before
    // authentication asks for a key.
    let api = match cors {
        Some(cors) => api.layer(cors),
        None => api,
    };
    api.with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(request.uri().path().to_owned())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(request.method().to_string())
}

/// A request's method as a metric label. Methods are free text in HTTP: an invented one
/// would be a new time series each, from any unauthenticated client.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request by its route template; a path no route matches counts
/// as `unmatched`, so that paths cannot make series either.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await.into_response();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The `{userId}` of a user's routes, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the parameter, which `user_in_path` reads.
struct UserPath {
    /// The user.
    #[param(rename = "userId", schema_with = crate::domain::schema::opaque_id)]
    user_id: String,
}

/// The `{userId}` of a path, checked as a body's `userId` is.
fn user_in_path(raw: &str) -> Result<crate::domain::UserId, error::ApiError> {
    crate::domain::UserId::parse(raw).map_err(|message| error::invalid("userId", message))
}
