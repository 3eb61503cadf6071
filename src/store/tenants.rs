//! Tenants and their API keys: a tenant is created together with its first key; keys are
//! stored as their public id and a hash, never as themselves.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, is_unique_violation, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// The tenant's id: the `tenantId` its events carry.
    #[schema(value_type = String)]
    #[sqlx(try_from = "String")]
    pub id: TenantId,
    /// A name for people.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// An API key as listed: never the key itself, only its public id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    /// The key's public prefix, which identifies it.
    pub id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What the store keeps of a key to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The tenant the key belongs to.
    pub tenant_id: TenantId,
    /// SHA-256 of the whole key.
    pub hash: Vec<u8>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A key's row, read back to check a presented key.
#[derive(sqlx::FromRow)]
struct KeyRow {
    #[sqlx(try_from = "String")]
    tenant_id: TenantId,
    hash: Vec<u8>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Where tenants and their keys live.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates a tenant with its first key, together; `Conflict` if the id is taken.
    async fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
        first_key: (&str, &[u8]),
    ) -> Result<Tenant, StoreError>;

    /// The tenant, if it exists.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;

    /// How many tenants there are.
    async fn count_tenants(&self) -> Result<u64, StoreError>;

    /// Adds a key (its id and hash) to a tenant.
    async fn add_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        hash: &[u8],
    ) -> Result<ApiKeyInfo, StoreError>;

    /// A tenant's keys, oldest first.
    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, StoreError>;

    /// Revokes one of a tenant's keys; false if the tenant has no such key.
    async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<bool, StoreError>;

    /// The key with this id, to check a presented key against.
    async fn api_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError>;
}

#[async_trait]
impl<DB> TenantStore for SqlStore<DB>
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
    async fn create_tenant(
        &self,
        id: &TenantId,
        name: &str,
        (key_id, hash): (&str, &[u8]),
    ) -> Result<Tenant, StoreError> {
        let now = now();
        let mut tx = self.writer.begin().await?;
        let inserted =
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(id.as_str())
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("tenant '{id}'")));
            }
            other => other?,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_id)
        .bind(id.as_str())
        .bind(hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Tenant {
            id: id.clone(),
            name: name.to_owned(),
            created_at: now,
        })
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn count_tenants(&self) -> Result<u64, StoreError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) AS n FROM tenants")
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }

    async fn add_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        hash: &[u8],
    ) -> Result<ApiKeyInfo, StoreError> {
        let now = now();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_id)
        .bind(tenant.as_str())
        .bind(hash)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(ApiKeyInfo {
            id: key_id.to_owned(),
            created_at: now,
            revoked_at: None,
        })
    }

    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<bool, StoreError> {
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 AND tenant_id = $3",
        )
        .bind(now())
        .bind(key_id)
        .bind(tenant.as_str())
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(revoked) == 1)
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row: Option<KeyRow> =
            sqlx::query_as("SELECT tenant_id, hash, revoked_at FROM api_keys WHERE id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|row| StoredKey {
            tenant_id: row.tenant_id,
            hash: row.hash,
            revoked: row.revoked_at.is_some(),
        }))
    }
}
