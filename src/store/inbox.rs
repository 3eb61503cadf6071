//! Users' inboxes of in-app notifications; each change is also appended to the user's
//! event log, so that connected clients follow it.

use super::StoreError;
use super::events::insert_events;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments};

/// An in-app notification in a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InboxItem {
    /// Its id (the push notification's).
    pub id: String,
    /// What it says, as JSON text.
    pub payload: String,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
    /// When the user read it.
    pub read_at: Option<DateTime<Utc>>,
}

/// Where users' inboxes live.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Puts an in-app notification into each of `users`' inboxes and appends
    /// `notification:new` to their logs; a redelivery adds nothing.
    async fn add_to_inboxes(
        &self,
        tenant: &TenantId,
        users: &[&str],
        id: &str,
        payload: &str,
    ) -> Result<(), StoreError>;

    /// A user's inbox, newest first.
    async fn inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        limit: i64,
    ) -> Result<Vec<InboxItem>, StoreError>;

    /// Changes a user's inbox: marks one item read (`Some(id)`, `read`), deletes one
    /// (`Some(id)`, not `read`) or clears all (`None`); appends the matching event to the
    /// user's log when something changed. Answers how many items changed.
    async fn change_inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        id: Option<&str>,
        read: bool,
    ) -> Result<u64, StoreError>;
}

#[async_trait]
impl<DB> InboxStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn add_to_inboxes(
        &self,
        tenant: &TenantId,
        users: &[&str],
        id: &str,
        payload: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let created_at = now();
        let mut events = Vec::new();
        for user in users {
            let added = sqlx::query(
                "INSERT INTO inbox_items (tenant_id, user_id, id, payload, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, user_id, id) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(*user)
            .bind(id)
            .bind(payload)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
            if DB::rows_affected(added) == 1 {
                events.push((*user, "notification:new", payload.to_owned()));
            }
        }
        insert_events::<DB>(&mut tx, tenant, &events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        limit: i64,
    ) -> Result<Vec<InboxItem>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, payload, created_at, read_at FROM inbox_items \
             WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn change_inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        id: Option<&str>,
        read: bool,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let at = now();
        let (changed, kind) = match (id, read) {
            (Some(id), true) => (
                sqlx::query(
                    "UPDATE inbox_items SET read_at = $4 WHERE tenant_id = $1 AND user_id = $2 \
                     AND id = $3 AND read_at IS NULL",
                )
                .bind(tenant.as_str())
                .bind(user)
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?,
                "notification:read",
            ),
            (Some(id), false) => (
                sqlx::query(
                    "DELETE FROM inbox_items WHERE tenant_id = $1 AND user_id = $2 AND id = $3",
                )
                .bind(tenant.as_str())
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?,
                "notification:deleted",
            ),
            (None, _) => (
                sqlx::query("DELETE FROM inbox_items WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant.as_str())
                    .bind(user)
                    .execute(&mut *tx)
                    .await?,
                "notification:cleared",
            ),
        };
        let changed = DB::rows_affected(changed);
        if changed > 0 {
            let event = serde_json::json!({"id": id, "at": at}).to_string();
            insert_events::<DB>(&mut tx, tenant, &[(user, kind, event)]).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}
