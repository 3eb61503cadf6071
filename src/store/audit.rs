//! The audit log: per tenant, a hash chain of records, each hashing the one before, so
//! that a changed or removed record shows when the chain is verified.

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::audit::chain;
pub use crate::audit::chain::NewAuditRecord;
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};
use std::collections::HashSet;

/// An audit record as stored, with its place and hashes in the chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    /// The record.
    #[sqlx(flatten)]
    pub record: NewAuditRecord,
    /// Its place in the tenant's chain, from 1.
    pub seq: i64,
    /// When Herald stored it.
    pub recorded_at: DateTime<Utc>,
    /// The hash of the record before it (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// Its own hash.
    pub hash: Vec<u8>,
}

/// A filtered page of a tenant's audit records, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this user's.
    pub user_id: Option<String>,
    /// Only this entity type.
    pub entity_type: Option<String>,
    /// Only this entity.
    pub entity_id: Option<String>,
    /// Only those that occurred at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only those that occurred before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only those before this place in the chain (the cursor).
    pub before_seq: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// Where the audit log lives.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends audit records to their tenants' chains, in one transaction, skipping ids
    /// already appended; answers how many were appended.
    async fn append_audit(&self, records: &[NewAuditRecord]) -> Result<u64, StoreError>;

    /// A tenant's audit records matching `query`, newest first.
    async fn audit_records(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// A tenant's audit record with this id (the id of the event it was appended from).
    async fn audit_record(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<AuditRecord>, StoreError>;

    /// Up to `limit` of a tenant's audit records after `after_seq`, in chain order.
    async fn audit_chain(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;

    /// Deletes audit records stored before `cutoff`; answers how many. A chain then starts
    /// at its oldest remaining record, which verification takes on trust.
    async fn delete_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Rows per multi-row audit statement: 13 parameters each.
const AUDIT_ROWS_PER_STATEMENT: usize = 1000;

const AUDIT_COLUMNS: &str = "tenant_id, seq, id, event_type, user_id, entity_type, entity_id, \
     changes, occurred_at, compliance, recorded_at, prev_hash, hash";

#[async_trait]
impl<DB> AuditStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> &'a [u8]: Param<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    Vec<u8>: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn append_audit(&self, records: &[NewAuditRecord]) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut tenants: Vec<&str> = records.iter().map(|r| r.tenant_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut appended = 0;
        let recorded_at = now();
        for tenant in tenants {
            sqlx::query(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(&chain::GENESIS[..])
            .execute(&mut *tx)
            .await?;
            // In PostgreSQL the head is locked, so that instances extend a chain one at a
            // time.
            let head = format!(
                "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1{}",
                DB::LOCK_FOR_UPDATE
            );
            let (mut seq, mut prev): (i64, Vec<u8>) = sqlx::query_as(sqlx::AssertSqlSafe(head))
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
            // A redelivered event is appended once: by its id, within this batch and
            // against what is stored (one look-up per statement-sized chunk).
            let mut seen = HashSet::new();
            let candidates: Vec<&NewAuditRecord> = records
                .iter()
                .filter(|r| r.tenant_id == tenant && seen.insert(r.id.as_str()))
                .collect();
            let mut stored = HashSet::new();
            for chunk in candidates.chunks(AUDIT_ROWS_PER_STATEMENT) {
                let mut lookup =
                    QueryBuilder::<DB>::new("SELECT id FROM audit_records WHERE id IN (");
                let mut ids = lookup.separated(", ");
                for record in chunk {
                    ids.push_bind(record.id.clone());
                }
                lookup.push(")");
                let found: Vec<(String,)> = lookup.build_query_as().fetch_all(&mut *tx).await?;
                stored.extend(found.into_iter().map(|(id,)| id));
            }
            // (seq, record, the hash before it, its own hash)
            let mut rows = Vec::with_capacity(candidates.len());
            for record in candidates.into_iter().filter(|r| !stored.contains(&r.id)) {
                seq += 1;
                let hash = chain::hash(&prev, seq, record).to_vec();
                rows.push((
                    seq,
                    record,
                    std::mem::replace(&mut prev, hash.clone()),
                    hash,
                ));
            }
            for chunk in rows.chunks(AUDIT_ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<DB>::new(
                    "INSERT INTO audit_records (tenant_id, seq, id, event_type, user_id, \
                     entity_type, entity_id, changes, occurred_at, compliance, recorded_at, \
                     prev_hash, hash) ",
                );
                insert.push_values(chunk, |mut row, (seq, record, prev_hash, hash)| {
                    row.push_bind(tenant.to_owned())
                        .push_bind(*seq)
                        .push_bind(record.id.clone())
                        .push_bind(record.event_type.clone())
                        .push_bind(record.user_id.clone())
                        .push_bind(record.entity_type.clone())
                        .push_bind(record.entity_id.clone())
                        .push_bind(record.changes.clone())
                        .push_bind(record.occurred_at)
                        .push_bind(record.compliance)
                        .push_bind(recorded_at)
                        .push_bind(prev_hash.clone())
                        .push_bind(hash.clone());
                });
                insert.build().execute(&mut *tx).await?;
                appended += chunk.len() as u64;
            }
            sqlx::query("UPDATE audit_heads SET seq = $1, hash = $2 WHERE tenant_id = $3")
                .bind(seq)
                .bind(&prev)
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(appended)
    }

    async fn audit_records(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = QueryBuilder::<DB>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_records WHERE tenant_id = "
        ));
        sql.push_bind(tenant.as_str());
        let filters = [
            (" AND event_type = ", &query.event_type),
            (" AND user_id = ", &query.user_id),
            (" AND entity_type = ", &query.entity_type),
            (" AND entity_id = ", &query.entity_id),
        ];
        for (clause, value) in filters {
            if let Some(value) = value {
                sql.push(clause).push_bind(value.clone());
            }
        }
        if let Some(from) = query.from {
            sql.push(" AND occurred_at >= ").push_bind(from);
        }
        if let Some(to) = query.to {
            sql.push(" AND occurred_at < ").push_bind(to);
        }
        if let Some(before) = query.before_seq {
            sql.push(" AND seq < ").push_bind(before);
        }
        sql.push(" ORDER BY seq DESC LIMIT ").push_bind(query.limit);
        Ok(sql.build_query_as().fetch_all(&self.pool).await?)
    }

    async fn audit_record(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<AuditRecord>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_records WHERE id = $1 AND tenant_id = $2"
        )))
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn audit_chain(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_records \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        )))
        .bind(tenant.as_str())
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn delete_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM audit_records WHERE recorded_at < $1")
            .bind(cutoff)
            .execute(&self.writer)
            .await?;
        Ok(DB::rows_affected(deleted))
    }
}
