//! Presence: how many live connections each user has on each instance, and when they
//! were last seen; and the key that signs the tokens those connections present, shared
//! by every instance.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};
use std::collections::HashMap;

/// Where a user is connected: whether anywhere, and when last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The user.
    pub user_id: String,
    /// Whether some instance holds a live connection of the user.
    pub online: bool,
    /// When the user was last connected (none if never).
    pub last_seen: Option<DateTime<Utc>>,
}

/// A user's connections summed over instances.
#[derive(sqlx::FromRow)]
struct Connections {
    user_id: String,
    last_seen: Option<DateTime<Utc>>,
    live: i64,
}

/// Where presence lives.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Counts a connection of `user` in or out (`delta` 1 or -1) on `instance`; answers
    /// how many live connections the user has across instances afterwards.
    async fn count_connection(
        &self,
        tenant: &TenantId,
        user: &str,
        instance: &str,
        delta: i64,
    ) -> Result<i64, StoreError>;

    /// Marks every connection of `instance` as alive now.
    async fn touch_presence(&self, instance: &str) -> Result<(), StoreError>;

    /// Where `users` are: online when an instance touched their connections since
    /// `alive_since`.
    async fn presence(
        &self,
        tenant: &TenantId,
        users: &[&str],
        alive_since: DateTime<Utc>,
    ) -> Result<Vec<Presence>, StoreError>;

    /// The key that signs real-time tokens, made by whichever instance asks first.
    async fn realtime_key(&self, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;
}

#[async_trait]
impl<DB> PresenceStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> &'a [u8]: Param<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    Vec<u8>: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn count_connection(
        &self,
        tenant: &TenantId,
        user: &str,
        instance: &str,
        delta: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO presence (tenant_id, user_id, instance_id, connections, last_seen) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, user_id, instance_id) \
             DO UPDATE SET connections = presence.connections + excluded.connections, \
             last_seen = excluded.last_seen",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(instance)
        .bind(delta.max(0))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if delta < 0 {
            sqlx::query(
                "UPDATE presence \
                 SET connections = CASE WHEN connections + $4 < 0 THEN 0 ELSE connections + $4 END \
                 WHERE tenant_id = $1 AND user_id = $2 AND instance_id = $3",
            )
            .bind(tenant.as_str())
            .bind(user)
            .bind(instance)
            .bind(delta)
            .execute(&mut *tx)
            .await?;
        }
        let (total,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(connections), 0) AS BIGINT) AS total FROM presence \
             WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant.as_str())
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(total)
    }

    async fn touch_presence(&self, instance: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE presence SET last_seen = $2 WHERE instance_id = $1 AND connections > 0",
        )
        .bind(instance)
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn presence(
        &self,
        tenant: &TenantId,
        users: &[&str],
        alive_since: DateTime<Utc>,
    ) -> Result<Vec<Presence>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT user_id, MAX(last_seen) AS last_seen, \
             CAST(SUM(CASE WHEN connections > 0 AND last_seen >= ",
        );
        query
            .push_bind(alive_since)
            .push(" THEN 1 ELSE 0 END) AS BIGINT) AS live FROM presence WHERE tenant_id = ")
            .push_bind(tenant.as_str())
            .push(" AND user_id IN (");
        let mut listed = query.separated(", ");
        for user in users {
            listed.push_bind(*user);
        }
        query.push(") GROUP BY user_id");
        let rows: Vec<Connections> = query.build_query_as().fetch_all(&self.pool).await?;
        let found: HashMap<String, (bool, Option<DateTime<Utc>>)> = rows
            .into_iter()
            .map(|row| (row.user_id, (row.live > 0, row.last_seen)))
            .collect();
        Ok(users
            .iter()
            .map(|user| {
                let (online, last_seen) = found.get(*user).cloned().unwrap_or((false, None));
                Presence {
                    user_id: (*user).to_owned(),
                    online,
                    last_seen,
                }
            })
            .collect())
    }

    async fn realtime_key(&self, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO realtime_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .execute(&self.writer)
        .await?;
        let (key,): (Vec<u8>,) = sqlx::query_as("SELECT key FROM realtime_keys WHERE id = 1")
            .fetch_one(&self.writer)
            .await?;
        Ok(key)
    }
}
