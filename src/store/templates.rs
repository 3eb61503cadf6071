//! Tenants' email templates in the store: every PUT adds a version, and the newest version
//! of each (name, locale) is current.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments};

/// A template as a tenant writes it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NewTemplate {
    /// Its name, as sends refer to it.
    pub name: String,
    /// Its locale (`fr-ca`, lower case), or empty for the default.
    pub locale: String,
    /// The subject; only partials and layouts have none.
    pub subject: Option<String>,
    /// The HTML body.
    pub html: String,
    /// The plain-text body; derived from the HTML when absent.
    pub text: Option<String>,
    /// Data for previews, as JSON text.
    pub sample_data: Option<String>,
}

/// A stored version of a template.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredTemplate {
    /// What was written.
    #[sqlx(flatten)]
    pub template: NewTemplate,
    /// Its version, from 1 for each (name, locale).
    pub version: i64,
    /// When this version was written.
    pub created_at: DateTime<Utc>,
}

/// Where tenants' templates live.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Adds a version of `template`; answers it with its version number.
    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &NewTemplate,
    ) -> Result<StoredTemplate, StoreError>;

    /// One version of a template (the newest when `version` is `None`).
    async fn template(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredTemplate>, StoreError>;

    /// The version numbers a template has, oldest first.
    async fn template_versions(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: &str,
    ) -> Result<Vec<i64>, StoreError>;

    /// The newest version of each of a tenant's templates, by name and locale.
    async fn current_templates(&self, tenant: &TenantId)
    -> Result<Vec<StoredTemplate>, StoreError>;

    /// Deletes every version of a template, in one locale or (`None`) in all; answers how
    /// many versions went.
    async fn delete_template(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// A number that changes whenever the tenant's templates change (0 if they never
    /// had any).
    async fn template_revision(&self, tenant: &TenantId) -> Result<i64, StoreError>;
}

/// Bumps the tenant's template revision inside the transaction on `connection`.
async fn bump_template_revision<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
{
    sqlx::query(
        "INSERT INTO template_revisions (tenant_id, revision) VALUES ($1, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET revision = template_revisions.revision + 1",
    )
    .bind(tenant.as_str())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[async_trait]
impl<DB> TemplateStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Param<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    Option<i64>: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &NewTemplate,
    ) -> Result<StoredTemplate, StoreError> {
        let created_at = now();
        let mut tx = self.writer.begin().await?;
        // The revision row is written first: on PostgreSQL it locks the tenant's
        // templates, so that two concurrent PUTs cannot take the same version.
        bump_template_revision::<DB>(&mut tx, tenant).await?;
        let (version,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM templates \
             WHERE tenant_id = $1 AND name = $2 AND locale = $3",
        )
        .bind(tenant.as_str())
        .bind(&template.name)
        .bind(&template.locale)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO templates (tenant_id, name, locale, version, subject, html, text, \
             sample_data, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant.as_str())
        .bind(&template.name)
        .bind(&template.locale)
        .bind(version)
        .bind(&template.subject)
        .bind(&template.html)
        .bind(&template.text)
        .bind(&template.sample_data)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoredTemplate {
            template: template.clone(),
            version,
            created_at,
        })
    }

    async fn template(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredTemplate>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, locale, version, subject, html, text, sample_data, created_at \
             FROM templates WHERE tenant_id = $1 AND name = $2 AND locale = $3 \
             AND ($4 IS NULL OR version = $4) ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(locale)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn template_versions(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let versions: Vec<(i64,)> = sqlx::query_as(
            "SELECT version FROM templates WHERE tenant_id = $1 AND name = $2 AND locale = $3 \
             ORDER BY version",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(locale)
        .fetch_all(&self.pool)
        .await?;
        Ok(versions.into_iter().map(|(version,)| version).collect())
    }

    async fn current_templates(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<StoredTemplate>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, locale, version, subject, html, text, sample_data, created_at \
             FROM templates t WHERE tenant_id = $1 AND version = \
             (SELECT MAX(version) FROM templates u WHERE u.tenant_id = t.tenant_id \
              AND u.name = t.name AND u.locale = t.locale) ORDER BY name, locale",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn delete_template(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        bump_template_revision::<DB>(&mut tx, tenant).await?;
        let deleted = sqlx::query(
            "DELETE FROM templates WHERE tenant_id = $1 AND name = $2 \
             AND ($3 IS NULL OR locale = $3)",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(locale)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(deleted))
    }

    async fn template_revision(&self, tenant: &TenantId) -> Result<i64, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT revision FROM template_revisions WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |(revision,)| revision))
    }
}
