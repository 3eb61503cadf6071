//! The delivery ledger: each notification with its deliveries, written in batches, and
//! read back per tenant for the status API.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore};
use crate::domain::TenantId;
use crate::outcome::{Channel, DeliveryStatus, NotificationState, RenderedFrom};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};
use std::collections::HashMap;

/// A notification in the delivery ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerNotification {
    /// Herald's id for the event.
    pub id: String,
    /// The tenant it belongs to.
    #[serde(skip)]
    pub tenant_id: String,
    /// `chat`, `push`, `email` or `audit`.
    pub kind: String,
    /// Where it stands, its deliveries summed up.
    pub status: NotificationState,
    /// Why the event as a whole ended as it did, when it did not reach its recipients
    /// (`unknown tenant`, the last error of a failed event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    #[serde(skip)]
    pub updated_at: DateTime<Utc>,
    /// The template an email was rendered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<RenderedFrom>,
}

/// One delivery of a notification: to one recipient, through one channel, to one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDelivery {
    /// The user or address it is for.
    pub recipient: String,
    /// The channel it goes through.
    #[sqlx(try_from = "String")]
    pub channel: Channel,
    /// Where it goes (an address, a device token), or empty until known.
    pub target: String,
    /// Where it stands.
    #[sqlx(try_from = "String")]
    pub status: DeliveryStatus,
    /// Handler attempts so far.
    #[sqlx(try_from = "i32")]
    pub attempts: u32,
    /// The last error, if an attempt failed.
    pub last_error: Option<String>,
    /// What the provider last answered (an SMTP reply, say), when it said something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One write to the ledger.
#[derive(Debug, Clone)]
pub struct LedgerRecord {
    /// The notification's state.
    pub notification: LedgerNotification,
    /// Its deliveries' states.
    pub deliveries: Vec<LedgerDelivery>,
    /// Whether this write replaces what is recorded (an outcome) or only fills in what is
    /// missing (the acceptance, which may land after a fast worker's outcome).
    pub replace: bool,
}

/// A notification's row: its template reference is JSON text.
#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: String,
    tenant_id: String,
    kind: String,
    #[sqlx(try_from = "String")]
    status: NotificationState,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    template: Option<String>,
}

impl TryFrom<NotificationRow> for LedgerNotification {
    type Error = StoreError;

    fn try_from(row: NotificationRow) -> Result<Self, StoreError> {
        let template = row
            .template
            .map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?;
        Ok(LedgerNotification {
            id: row.id,
            tenant_id: row.tenant_id,
            kind: row.kind,
            status: row.status,
            reason: row.reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
            template,
        })
    }
}

/// Where the delivery ledger lives.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Writes ledger records in one transaction.
    async fn write_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError>;

    /// Deletes the ledger entries of these notifications that are as their acceptance
    /// wrote them (`queued`, no attempt made): their events were not queued after all.
    async fn withdraw_acceptances(&self, ids: &[String]) -> Result<(), StoreError>;

    /// A tenant's notification and its deliveries, if it has one with this id.
    async fn notification(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<(LedgerNotification, Vec<LedgerDelivery>)>, StoreError>;

    /// Deletes ledger entries of notifications accepted before `cutoff`; answers how many
    /// notifications.
    async fn delete_ledger_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Rows per multi-row ledger statement: 9 parameters at most, well under both databases'
/// parameter limits.
const LEDGER_ROWS_PER_STATEMENT: usize = 1000;

/// The rows of `records` with this `replace`, the last write of each row only.
fn latest_ledger_rows(
    records: &[LedgerRecord],
    replace: bool,
) -> (Vec<&LedgerNotification>, Vec<(&String, &LedgerDelivery)>) {
    let mut notifications = HashMap::new();
    let mut deliveries = HashMap::new();
    for (order, record) in records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.replace == replace)
    {
        let n = &record.notification;
        notifications.insert(&n.id, (order, n));
        for d in &record.deliveries {
            deliveries.insert(
                (&n.id, &d.channel, &d.recipient, &d.target),
                (order, (&n.id, d)),
            );
        }
    }
    let mut notifications: Vec<_> = notifications.into_values().collect();
    notifications.sort_by_key(|(order, _)| *order);
    let mut deliveries: Vec<_> = deliveries.into_values().collect();
    deliveries.sort_by_key(|(order, _)| *order);
    (
        notifications.into_iter().map(|(_, n)| n).collect(),
        deliveries.into_iter().map(|(_, d)| d).collect(),
    )
}

#[async_trait]
impl<DB> LedgerStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i32: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn write_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        // Acceptances first, only filling in; then outcomes, replacing. Within each,
        // the last write of a row wins, and each row appears once per statement.
        for replace in [false, true] {
            let (notifications, deliveries) = latest_ledger_rows(records, replace);
            let conflict = if replace {
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 reason = excluded.reason, updated_at = excluded.updated_at, \
                 template = COALESCE(excluded.template, notifications.template)"
            } else {
                " ON CONFLICT (id) DO NOTHING"
            };
            for chunk in notifications.chunks(LEDGER_ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<DB>::new(
                    "INSERT INTO notifications \
                     (id, tenant_id, kind, status, reason, created_at, updated_at, template) ",
                );
                insert.push_values(chunk, |mut row, n| {
                    row.push_bind(n.id.clone())
                        .push_bind(n.tenant_id.clone())
                        .push_bind(n.kind.clone())
                        .push_bind(n.status.as_str())
                        .push_bind(n.reason.clone())
                        .push_bind(n.created_at)
                        .push_bind(n.updated_at)
                        .push_bind(n.template.as_ref().map(|t| {
                            serde_json::to_string(t).expect("a template reference serializes")
                        }));
                });
                insert.push(conflict);
                insert.build().execute(&mut *tx).await?;
            }
            let conflict = if replace {
                " ON CONFLICT (notification_id, channel, recipient, target) DO UPDATE \
                 SET status = excluded.status, attempts = excluded.attempts, \
                 last_error = excluded.last_error, reply = excluded.reply, \
                 updated_at = excluded.updated_at"
            } else {
                " ON CONFLICT (notification_id, channel, recipient, target) DO NOTHING"
            };
            for chunk in deliveries.chunks(LEDGER_ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<DB>::new(
                    "INSERT INTO deliveries (notification_id, channel, recipient, target, \
                     status, attempts, last_error, reply, updated_at) ",
                );
                insert.push_values(chunk, |mut row, (id, d)| {
                    row.push_bind((*id).clone())
                        .push_bind(d.channel.as_str())
                        .push_bind(d.recipient.clone())
                        .push_bind(d.target.clone())
                        .push_bind(d.status.as_str())
                        .push_bind(i32::try_from(d.attempts).unwrap_or(i32::MAX))
                        .push_bind(d.last_error.clone())
                        .push_bind(d.reply.clone())
                        .push_bind(d.updated_at);
                });
                insert.push(conflict);
                insert.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn withdraw_acceptances(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for id in ids {
            let withdrawn = sqlx::query(
                "DELETE FROM notifications WHERE id = $1 AND status = 'queued' AND NOT EXISTS \
                 (SELECT 1 FROM deliveries WHERE notification_id = $1 AND attempts > 0)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if DB::rows_affected(withdrawn) == 1 {
                sqlx::query("DELETE FROM deliveries WHERE notification_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn notification(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<(LedgerNotification, Vec<LedgerDelivery>)>, StoreError> {
        let row: Option<NotificationRow> = sqlx::query_as(
            "SELECT id, tenant_id, kind, status, reason, created_at, updated_at, template \
             FROM notifications WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let deliveries = sqlx::query_as(
            "SELECT channel, recipient, target, status, attempts, last_error, reply, updated_at \
             FROM deliveries WHERE notification_id = $1 ORDER BY channel, recipient, target",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some((row.try_into()?, deliveries)))
    }

    async fn delete_ledger_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "DELETE FROM deliveries WHERE notification_id IN \
             (SELECT id FROM notifications WHERE created_at < $1)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM notifications WHERE created_at < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(deleted))
    }
}
