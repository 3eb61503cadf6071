//! Audit queries: a tenant's records, filtered and cursor-paginated, newest first; and the
//! verification of its hash chain.

use super::AppState;
use super::auth::Authenticated;
use super::error::answers::{InputRefusals, KeyRefusals};
use super::error::{ApiError, invalid};
use crate::audit::{self, Verification};
use crate::domain::schema;
use crate::store::{AuditQuery, AuditRecord};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The audit query routes; audit events are sent with the other sends.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit/events", get(query))
        .route("/v1/audit/verify", get(verify))
}

/// The query string of `GET /v1/audit/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AuditParams {
    /// Only this event type.
    event_type: Option<String>,
    /// Only this user's.
    user_id: Option<String>,
    /// Only this entity type.
    entity_type: Option<String>,
    /// Only this entity.
    entity_id: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Only events before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(pattern = "^([1-9]|[1-9][0-9]|[1-4][0-9]{2}|500)$")]
    limit: Option<String>,
    /// The `nextCursor` of the previous page.
    #[param(schema_with = schema::positive_number_text)]
    cursor: Option<String>,
}

/// One audit record as answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditItem {
    /// The event's id.
    pub id: String,
    /// What happened.
    pub event_type: String,
    /// Who did it.
    pub user_id: String,
    /// The kind of thing it happened to.
    pub entity_type: String,
    /// Which one.
    pub entity_id: String,
    /// What changed.
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Whether it is kept for compliance.
    pub compliance: bool,
    /// When Herald stored it.
    pub recorded_at: DateTime<Utc>,
    /// Its place in the tenant's hash chain.
    pub sequence: i64,
    /// Its hash in the chain, hex.
    pub hash: String,
}

/// A page of audit records.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl From<AuditRecord> for AuditItem {
    fn from(stored: AuditRecord) -> Self {
        let r = stored.record;
        AuditItem {
            changes: serde_json::from_str(&r.changes).unwrap_or(serde_json::Value::Null),
            id: r.id,
            event_type: r.event_type,
            user_id: r.user_id,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            timestamp: r.occurred_at,
            compliance: r.compliance,
            recorded_at: stored.recorded_at,
            sequence: stored.seq,
            hash: hex::encode(stored.hash),
        }
    }
}

fn time(field: &str, raw: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                invalid(
                    field,
                    "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
                )
            })
    })
    .transpose()
}

/// The tenant's audit records, filtered, newest first.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", security(("api_key" = [])), params(AuditParams),
    responses((status = 200, body = AuditPage), KeyRefusals, InputRefusals))]
pub async fn query(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(p) = params.map_err(|e| invalid("query", e.body_text()))?;
    let limit = match p.limit {
        None => 50,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| invalid("limit", "must be a whole number from 1 to 500"))?,
    };
    let before_seq = p
        .cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("cursor", "is not a cursor this API gave"))
        })
        .transpose()?;
    let query = AuditQuery {
        event_type: p.event_type,
        user_id: p.user_id,
        entity_type: p.entity_type,
        entity_id: p.entity_id,
        from: time("from", p.from)?,
        to: time("to", p.to)?,
        before_seq,
        // One more than asked tells whether there is a next page.
        limit: limit + 1,
    };
    let mut records = state.stores.audit.audit_records(&tenant, &query).await?;
    let next_cursor = (records.len() as i64 > limit).then(|| {
        records.truncate(limit as usize);
        records.last().map(|r| r.seq.to_string())
    });
    Ok(Json(AuditPage {
        items: records.into_iter().map(AuditItem::from).collect(),
        next_cursor: next_cursor.flatten(),
    }))
}

/// Checks the tenant's audit hash chain and says where it breaks, if it does.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("api_key" = [])),
    responses((status = 200, body = Verification), KeyRefusals))]
pub async fn verify(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<Verification>, ApiError> {
    Ok(Json(
        audit::verify(state.stores.audit.as_ref(), &tenant).await?,
    ))
}
