//! Each user's event log: what reconnecting clients replay from their cursor, and the
//! cursor each user acknowledged. Chat messages, read receipts and inbox changes append
//! to it in their own transactions, through [`insert_events`]; per-user updates append
//! once per update id ([`EventLogStore::append_update`]), so that a redelivery adds
//! nothing.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};

/// One event of a user's log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    /// Its place in the user's log: the cursor clients resume from.
    #[sqlx(rename = "id")]
    pub cursor: i64,
    /// `message:new`, `message:read`, `notification:new`, ...
    pub kind: String,
    /// The event's data, as JSON text.
    pub payload: String,
}

/// Where users' event logs live.
#[async_trait]
pub trait EventLogStore: Send + Sync {
    /// Appends events to users' logs: (user, kind, payload).
    async fn append_events(
        &self,
        tenant: &TenantId,
        events: &[(&str, &str, String)],
    ) -> Result<(), StoreError>;

    /// Appends an update's events (user, kind, payload) in one transaction, each once:
    /// an event of `update_id` already in that user's log under that kind (the update was
    /// delivered before) is skipped.
    async fn append_update(
        &self,
        tenant: &TenantId,
        update_id: &str,
        events: &[(&str, &str, String)],
    ) -> Result<(), StoreError>;

    /// Up to `limit` of a user's events after `cursor`, oldest first.
    async fn events_after(
        &self,
        tenant: &TenantId,
        user: &str,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Records that the user has everything up to `cursor` (never moving back).
    async fn acknowledge(
        &self,
        tenant: &TenantId,
        user: &str,
        cursor: i64,
    ) -> Result<(), StoreError>;

    /// The cursor the user last acknowledged, 0 if none.
    async fn acknowledged(&self, tenant: &TenantId, user: &str) -> Result<i64, StoreError>;

    /// Deletes events stored before `cutoff`; answers how many.
    async fn delete_realtime_events_before(&self, cutoff: DateTime<Utc>)
    -> Result<u64, StoreError>;
}

/// Rows per multi-row event insert: 6 parameters each, within SQLite's 32,766.
const EVENTS_PER_STATEMENT: usize = 1000;

/// Appends events to users' logs on `connection`, inside its caller's transaction:
/// (user, kind, payload).
pub(super) async fn insert_events<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
    events: &[(&str, &str, String)],
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
    DateTime<Utc>: Column<DB>,
{
    insert_rows::<DB>(connection, tenant, events, None).await
}

/// Inserts events, under `update_id` when they are an update's: those an update already
/// has in the log are then skipped (the unique index of migration 0012).
pub(super) async fn insert_rows<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
    events: &[(&str, &str, String)],
    update_id: Option<&str>,
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
    DateTime<Utc>: Column<DB>,
{
    let created_at = now();
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO realtime_events \
             (tenant_id, user_id, kind, payload, created_at, update_id) ",
        );
        insert.push_values(chunk, |mut row, (user, kind, payload)| {
            row.push_bind(tenant.as_str())
                .push_bind(*user)
                .push_bind(*kind)
                .push_bind(payload.as_str())
                .push_bind(created_at);
            // NULL as text, so that other events need no bound for binding an Option.
            match update_id {
                Some(id) => row.push_bind(id),
                None => row.push("NULL"),
            };
        });
        if update_id.is_some() {
            insert.push(" ON CONFLICT DO NOTHING");
        }
        insert.build().execute(&mut *connection).await?;
    }
    Ok(())
}

#[async_trait]
impl<DB> EventLogStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn append_events(
        &self,
        tenant: &TenantId,
        events: &[(&str, &str, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        insert_events::<DB>(&mut tx, tenant, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_update(
        &self,
        tenant: &TenantId,
        update_id: &str,
        events: &[(&str, &str, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        insert_rows::<DB>(&mut tx, tenant, events, Some(update_id)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn events_after(
        &self,
        tenant: &TenantId,
        user: &str,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, kind, payload FROM realtime_events \
             WHERE tenant_id = $1 AND user_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn acknowledge(
        &self,
        tenant: &TenantId,
        user: &str,
        cursor: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO realtime_acks (tenant_id, user_id, cursor) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET cursor = excluded.cursor \
             WHERE excluded.cursor > realtime_acks.cursor",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(cursor)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn acknowledged(&self, tenant: &TenantId, user: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT cursor FROM realtime_acks WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant.as_str())
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(0, |(cursor,)| cursor))
    }

    async fn delete_realtime_events_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM realtime_events WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.writer)
            .await?;
        Ok(DB::rows_affected(deleted))
    }
}
