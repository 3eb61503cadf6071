//! The admin view of the queues: depth and consumers, dead letters, and replay.

use super::AppState;
use super::auth::Admin;
use super::error::answers::{InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody};
use crate::broker::{QueueSpec, QueueStats};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The queue routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/queues", get(queues))
        .route("/admin/queues/{name}/dead-letters", get(dead_letters))
        .route("/admin/queues/{name}/dead-letters/replay", post(replay))
}

/// How many items to take at most.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

impl Limit {
    /// The limit asked for, or a 422 naming the parameter.
    fn read(query: Result<Query<Limit>, QueryRejection>) -> Result<usize, ApiError> {
        let invalid = || {
            ApiError::Validation(crate::domain::parse::FieldErrors(vec![
                crate::domain::parse::FieldError {
                    field: "limit".into(),
                    message: "must be a whole number from 1 to 1000".into(),
                },
            ]))
        };
        let Query(limit) = query.map_err(|_| invalid())?;
        match limit.limit.unwrap_or(100) {
            limit @ 1..=1000 => Ok(limit),
            _ => Err(invalid()),
        }
    }
}

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterBody {
    /// The event's id, if the message had one.
    pub message_id: Option<String>,
    /// The routing key it was first published with.
    pub routing_key: String,
    /// `expired`, `failed` or `rejected` (or RabbitMQ's own reason).
    pub reason: String,
    /// The last handler error.
    pub last_error: Option<String>,
    /// Handler attempts made.
    pub attempts: u32,
    /// The message: its JSON, or its text if it is not JSON.
    #[schema(value_type = Object)]
    pub message: serde_json::Value,
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetters {
    /// Oldest first.
    pub items: Vec<DeadLetterBody>,
}

/// What a replay moved.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// How many dead letters went back onto the queue.
    pub replayed: u64,
}

fn queue<'a>(state: &'a AppState, name: &str) -> Result<&'a QueueSpec, ApiError> {
    state
        .topology
        .queue_named(name)
        .ok_or_else(|| ApiError::NotFound(format!("queue {name}")))
}

fn broker_error(e: crate::broker::BrokerError) -> ApiError {
    ApiError::Unavailable {
        message: format!("the broker could not answer ({e}); try again later"),
        retry_after: std::time::Duration::from_secs(5),
        details: Vec::new(),
    }
}

/// Each queue's (and dead-letter queue's) messages and consumers; on RabbitMQ also the
/// `unrouted` queue, where messages published with a routing key no queue is bound for
/// are kept.
#[utoipa::path(get, path = "/admin/queues", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, description = "By queue name", body = BTreeMap<String, QueueStats>),
              (status = 503, body = ErrorBody), KeyRefusals))]
pub async fn queues(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<BTreeMap<String, QueueStats>>, ApiError> {
    let mut answer = BTreeMap::new();
    for spec in &state.topology.queues {
        let stats = state
            .broker
            .queue_stats(&spec.name)
            .await
            .map_err(broker_error)?;
        answer.insert(spec.configured_name.clone(), stats);
        let dead = state
            .broker
            .queue_stats(&spec.dead_letter_queue())
            .await
            .map_err(broker_error)?;
        answer.insert(format!("{}.dlq", spec.configured_name), dead);
    }
    if state.broker.name() == "rabbitmq" {
        let unrouted = state
            .broker
            .queue_stats(&state.topology.unrouted)
            .await
            .map_err(broker_error)?;
        answer.insert("unrouted".to_owned(), unrouted);
    }
    Ok(Json(answer))
}

/// A queue's dead letters, with their reason and last error, oldest first.
#[utoipa::path(get, path = "/admin/queues/{name}/dead-letters", tag = "admin", security(("admin_token" = [])),
    params(("name" = String, Path, description = "The queue, e.g. email.notifications"), Limit),
    responses((status = 200, body = DeadLetters), (status = 404, body = ErrorBody),
              (status = 422, description = "limit is not from 1 to 1000", body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn dead_letters(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    limit: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<DeadLetters>, ApiError> {
    let spec = queue(&state, &name)?;
    let letters = state
        .broker
        .dead_letters(spec, Limit::read(limit)?)
        .await
        .map_err(broker_error)?;
    let items = letters
        .into_iter()
        .map(|l| DeadLetterBody {
            message: serde_json::from_slice(&l.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&l.body).into_owned())
            }),
            message_id: l.message_id,
            routing_key: l.routing_key,
            reason: l.reason,
            last_error: l.last_error,
            attempts: l.attempts,
        })
        .collect();
    Ok(Json(DeadLetters { items }))
}

/// Puts a queue's dead letters back on it, oldest first, each once: their attempts start
/// afresh, and the ledger keeps counting from the earlier ones.
#[utoipa::path(post, path = "/admin/queues/{name}/dead-letters/replay", tag = "admin", security(("admin_token" = [])),
    params(("name" = String, Path, description = "The queue, e.g. email.notifications"), Limit),
    responses((status = 200, body = Replayed), (status = 404, body = ErrorBody),
              (status = 422, description = "limit is not from 1 to 1000", body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn replay(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    limit: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Replayed>, ApiError> {
    let spec = queue(&state, &name)?;
    let replayed = state
        .broker
        .replay_dead_letters(spec, Limit::read(limit)?)
        .await
        .map_err(broker_error)?;
    tracing::info!(queue = %spec.configured_name, replayed, "dead letters replayed");
    Ok(Json(Replayed { replayed }))
}
