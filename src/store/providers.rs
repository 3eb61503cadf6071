//! Tenants' delivery provider settings (SMTP relay, APNs and FCM credentials), kept as
//! JSON so that each channel owns its own shape.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments};

/// Where tenants' provider settings live.
#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// Sets a tenant's settings for `provider` (`smtp`, `apns`, `fcm`), replacing any.
    async fn put_provider(
        &self,
        tenant: &TenantId,
        provider: &str,
        settings: &str,
    ) -> Result<DateTime<Utc>, StoreError>;

    /// A tenant's settings for `provider`, as JSON text, and when they were set.
    async fn provider(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError>;

    /// Removes a tenant's settings for `provider`; false if it had none.
    async fn delete_provider(&self, tenant: &TenantId, provider: &str) -> Result<bool, StoreError>;
}

#[async_trait]
impl<DB> ProviderStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn put_provider(
        &self,
        tenant: &TenantId,
        provider: &str,
        settings: &str,
    ) -> Result<DateTime<Utc>, StoreError> {
        let updated_at = now();
        sqlx::query(
            "INSERT INTO providers (tenant_id, provider, settings, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, provider) DO UPDATE \
             SET settings = excluded.settings, updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(provider)
        .bind(settings)
        .bind(updated_at)
        .execute(&self.writer)
        .await?;
        Ok(updated_at)
    }

    async fn provider(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT settings, updated_at FROM providers WHERE tenant_id = $1 AND provider = $2",
        )
        .bind(tenant.as_str())
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn delete_provider(&self, tenant: &TenantId, provider: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM providers WHERE tenant_id = $1 AND provider = $2")
            .bind(tenant.as_str())
            .bind(provider)
            .execute(&self.writer)
            .await?;
        Ok(DB::rows_affected(deleted) > 0)
    }
}
