//! The device registry: where each user's push notifications go.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The user it belongs to.
    pub user_id: String,
    /// `ios`, `android` or `web`.
    pub platform: String,
    /// The provider's token for it (APNs device token, FCM registration token).
    pub token: String,
    /// When it was first registered.
    pub created_at: DateTime<Utc>,
    /// When it was last registered.
    pub updated_at: DateTime<Utc>,
}

/// Users per query when looking up the devices of many.
const USERS_PER_QUERY: usize = 500;

/// Where tenants' devices live.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Registers `token` for `user`, moving it from any other user of the tenant.
    async fn register_device(
        &self,
        tenant: &TenantId,
        user: &str,
        platform: &str,
        token: &str,
    ) -> Result<Device, StoreError>;

    /// A user's devices, oldest first.
    async fn devices(&self, tenant: &TenantId, user: &str) -> Result<Vec<Device>, StoreError>;

    /// The devices of all of `users` on one of `platforms`.
    async fn devices_of(
        &self,
        tenant: &TenantId,
        users: &[&str],
        platforms: &[&str],
    ) -> Result<Vec<Device>, StoreError>;

    /// Removes a device; with `user`, only if it (still) belongs to that user. False if
    /// there was none.
    async fn remove_device(
        &self,
        tenant: &TenantId,
        token: &str,
        user: Option<&str>,
    ) -> Result<bool, StoreError>;
}

#[async_trait]
impl<DB> DeviceStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Param<'a, DB>,
    String: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn register_device(
        &self,
        tenant: &TenantId,
        user: &str,
        platform: &str,
        token: &str,
    ) -> Result<Device, StoreError> {
        Ok(sqlx::query_as(
            "INSERT INTO devices (tenant_id, token, user_id, platform, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, token) DO UPDATE \
             SET user_id = excluded.user_id, platform = excluded.platform, \
             updated_at = excluded.updated_at \
             RETURNING user_id, platform, token, created_at, updated_at",
        )
        .bind(tenant.as_str())
        .bind(token)
        .bind(user)
        .bind(platform)
        .bind(now())
        .fetch_one(&self.writer)
        .await?)
    }

    async fn devices(&self, tenant: &TenantId, user: &str) -> Result<Vec<Device>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, platform, token, created_at, updated_at FROM devices \
             WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, token",
        )
        .bind(tenant.as_str())
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn devices_of(
        &self,
        tenant: &TenantId,
        users: &[&str],
        platforms: &[&str],
    ) -> Result<Vec<Device>, StoreError> {
        let mut found = Vec::new();
        for chunk in users.chunks(USERS_PER_QUERY) {
            let mut query = QueryBuilder::<DB>::new(
                "SELECT user_id, platform, token, created_at, updated_at FROM devices \
                 WHERE tenant_id = ",
            );
            query.push_bind(tenant.as_str()).push(" AND user_id IN (");
            let mut users = query.separated(", ");
            for user in chunk {
                users.push_bind(*user);
            }
            query.push(") AND platform IN (");
            let mut kinds = query.separated(", ");
            for platform in platforms {
                kinds.push_bind(*platform);
            }
            query.push(") ORDER BY user_id, created_at, token");
            found.extend(query.build_query_as().fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    async fn remove_device(
        &self,
        tenant: &TenantId,
        token: &str,
        user: Option<&str>,
    ) -> Result<bool, StoreError> {
        let removed = sqlx::query(
            "DELETE FROM devices WHERE tenant_id = $1 AND token = $2 \
             AND ($3 IS NULL OR user_id = $3)",
        )
        .bind(tenant.as_str())
        .bind(token)
        .bind(user)
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(removed) > 0)
    }
}
