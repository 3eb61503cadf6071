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

/// Herald can accept and deliver events: the broker, the database and the real-time bus
/// answer.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let broker = state.broker.health().await;
    let database = state.stores.health.ping().await;
    let bus = state.realtime.hub.bus_trouble();
    let healthy = broker.healthy && database.is_ok() && bus.is_none();
    let body = json!({
        "status": if healthy { "ready" } else { "unavailable" },
        "broker": BrokerHealthBody::from(broker),
        "database": {
            "healthy": database.is_ok(),
            "detail": database.err().map_or_else(|| "answering".to_owned(), |e| e.to_string()),
        },
        "realtime": {
            "healthy": bus.is_none(),
            "detail": bus.unwrap_or_else(|| "pokes reach every instance".to_owned()),
        },
    });
    (status_of(healthy), Json(body)).into_response()
}

/// RabbitMQ's state as Herald sees it: the broker's connection, and the real-time bus's.
#[utoipa::path(get, path = "/health/rabbitmq", tag = "operations",
    responses((status = 200, body = BrokerHealthBody), (status = 503, body = BrokerHealthBody)))]
pub async fn rabbitmq(State(state): State<AppState>) -> Response {
    let health = state.broker.health().await;
    let health = if health.broker != "rabbitmq" {
        BrokerHealth {
            detail: format!("RabbitMQ is not configured; {}", health.detail),
            ..health
        }
    } else if let Some(trouble) = state.realtime.hub.bus_trouble() {
        BrokerHealth {
            healthy: false,
            detail: format!("{}; the real-time bus is down: {trouble}", health.detail),
            ..health
        }
    } else {
        health
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
    if state.broker.name() == "rabbitmq"
        && let Ok(unrouted) = state.broker.queue_stats(&state.topology.unrouted).await
    {
        let count = i64::try_from(unrouted.message_count).unwrap_or(i64::MAX);
        state.metrics.unrouted.set(count);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
