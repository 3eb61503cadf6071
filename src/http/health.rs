//! Liveness, readiness and metrics for operators and orchestrators.

use super::AppState;
use crate::broker::BrokerHealth;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

/// The operations routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(alive))
        .route("/health/ready", get(ready))
        .route("/health/rabbitmq", get(rabbitmq))
        .route("/metrics", get(metrics))
}

/// The broker's health, as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokerHealthBody {
    /// Whether the broker can take work.
    pub healthy: bool,
    /// Which broker (`embedded` or `rabbitmq`).
    pub broker: String,
    /// A sentence on its state.
    pub detail: String,
}

impl From<BrokerHealth> for BrokerHealthBody {
    fn from(h: BrokerHealth) -> Self {
        BrokerHealthBody {
            healthy: h.healthy,
            broker: h.broker.to_owned(),
            detail: h.detail,
        }
    }
}

fn status_of(healthy: bool) -> StatusCode {
    if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The process is alive.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive")))]
pub async fn alive() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Herald can accept events: the broker and the database answer.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let broker = state.broker.health().await;
    let database = state.tenancy.store().ping().await;
    let healthy = broker.healthy && database.is_ok();
    let body = json!({
        "status": if healthy { "ready" } else { "unavailable" },
        "broker": BrokerHealthBody::from(broker),
        "database": {
            "healthy": database.is_ok(),
            "detail": database.err().map_or_else(|| "answering".to_owned(), |e| e.to_string()),
        },
    });
    (status_of(healthy), Json(body)).into_response()
}

/// RabbitMQ's state as Herald sees it.
#[utoipa::path(get, path = "/health/rabbitmq", tag = "operations",
    responses((status = 200, body = BrokerHealthBody), (status = 503, body = BrokerHealthBody)))]
pub async fn rabbitmq(State(state): State<AppState>) -> Response {
    let health = state.broker.health().await;
    let health = if health.broker == "rabbitmq" {
        health
    } else {
        BrokerHealth {
            detail: format!("RabbitMQ is not configured; {}", health.detail),
            ..health
        }
    };
    (
        status_of(health.healthy),
        Json(BrokerHealthBody::from(health)),
    )
        .into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
