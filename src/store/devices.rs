//! The device registry: where each user's push notifications go.

use super::StoreError;
use super::sql::{SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
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

fn device<R: Row>(row: &R) -> Result<Device, StoreError>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Device {
        user_id: row.try_get("user_id")?,
        platform: row.try_get("platform")?,
        token: row.try_get("token")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

macro_rules! device_store {
    ($db:ty) => {
        #[async_trait]
        impl DeviceStore for SqlStore<$db> {
            async fn register_device(
                &self,
                tenant: &TenantId,
                user: &str,
                platform: &str,
                token: &str,
            ) -> Result<Device, StoreError> {
                let row = sqlx::query(
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
                .await?;
                device(&row)
            }

            async fn devices(&self, tenant: &TenantId, user: &str) -> Result<Vec<Device>, StoreError> {
                let rows = sqlx::query(
                    "SELECT user_id, platform, token, created_at, updated_at FROM devices \
                     WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, token",
                )
                .bind(tenant.as_str())
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(device).collect()
            }

            async fn devices_of(
                &self,
                tenant: &TenantId,
                users: &[&str],
                platforms: &[&str],
            ) -> Result<Vec<Device>, StoreError> {
                let mut found = Vec::new();
                for chunk in users.chunks(USERS_PER_QUERY) {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT user_id, platform, token, created_at, updated_at FROM devices WHERE tenant_id = ",
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
                    let rows = query.build().fetch_all(&self.pool).await?;
                    for row in &rows {
                        found.push(device(row)?);
                    }
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
                    "DELETE FROM devices WHERE tenant_id = $1 AND token = $2 AND ($3 IS NULL OR user_id = $3)",
                )
                .bind(tenant.as_str())
                .bind(token)
                .bind(user)
                .execute(&self.writer)
                .await?
                .rows_affected();
                Ok(removed > 0)
            }
        }
    };
}

device_store!(Sqlite);
device_store!(Postgres);
