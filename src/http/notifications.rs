//! A notification's status, per recipient, from the delivery ledger.

use super::AppState;
use super::auth::Authenticated;
use super::error::answers::{InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody};
use crate::store::{LedgerDelivery, LedgerNotification};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

/// The notification routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/notifications/{id}", get(status))
}

/// A notification and each of its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationStatus {
    /// The notification.
    #[serde(flatten)]
    pub notification: LedgerNotification,
    /// One entry per recipient (and target, once known).
    pub deliveries: Vec<LedgerDelivery>,
}

/// The status of one of the tenant's notifications, by the id its send answered (or, for
/// an event published straight to an exchange, its AMQP `message_id`). Another tenant's is
/// 404, as is an id that does not exist.
#[utoipa::path(get, path = "/v1/notifications/{id}", tag = "send", security(("api_key" = [])),
    params(("id" = String, Path, description = "The id a send answered, or a direct publish's message_id")),
    responses((status = 200, body = NotificationStatus), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn status(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<NotificationStatus>, ApiError> {
    // An event published straight to an exchange is known by the id its publisher gave
    // it (its AMQP message_id), which Herald turned into a UUID the same way.
    let id = crate::domain::id_from_message_id(&id).to_string();
    let found = crate::ledger::status(
        state.stores.ledger.as_ref(),
        state.stores.audit.as_ref(),
        &tenant,
        &id,
    )
    .await?;
    let (notification, deliveries) =
        found.ok_or_else(|| ApiError::NotFound(format!("notification {id}")))?;
    Ok(Json(NotificationStatus {
        notification,
        deliveries,
    }))
}
