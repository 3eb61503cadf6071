//! The store on sqlx, for PostgreSQL and SQLite. The implementation is written once, as a
//! macro instantiated per database, since the SQL is the same.

use super::{
    ApiKeyInfo, AuditQuery, AuditRecord, Claim, KeyBinding, LedgerDelivery, LedgerNotification,
    LedgerRecord, NewAuditRecord, Store, StoreError, StoredKey, Tenant,
};
use crate::audit::chain;
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Postgres, Row, Sqlite};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The store on a sqlx pool of database `DB`.
pub struct SqlStore<DB: sqlx::Database> {
    pub(super) pool: Pool<DB>,
    /// Where writes go. On SQLite, one connection: SQLite discards a connection's page
    /// cache whenever another connection has written, so that writes spread over a pool
    /// each start cold and read their indexes back from the file (the batched ledger and
    /// audit writes ran at half speed); and they take turns on the database's one write
    /// lock anyway. On PostgreSQL, the pool itself.
    pub(super) writer: Pool<DB>,
}

impl SqlStore<Sqlite> {
    /// Opens a SQLite store, creating its file (and directory) when missing.
    pub async fn open_sqlite(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(SqlStore { pool, writer })
    }
}

impl SqlStore<Postgres> {
    /// Opens a PostgreSQL store.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(SqlStore {
            writer: pool.clone(),
            pool,
        })
    }
}

/// The current time at the precision both databases keep (microseconds), so that what is
/// answered after a write equals what is read back later.
pub(super) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

fn tenant_id(raw: String) -> Result<TenantId, StoreError> {
    TenantId::parse(&raw).map_err(|e| StoreError::Corrupt(format!("tenant id '{raw}': {e}")))
}

/// Whether an insert failed on a unique constraint.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// The status of an idempotency key whose events were not confirmed: what the send was
/// answered, and the mark that a repeat publishes them again.
const UNCONFIRMED: u16 = 503;

/// Rows per multi-row audit statement: 13 parameters each.
const AUDIT_ROWS_PER_STATEMENT: usize = 1000;

/// A status or channel read back from its column.
fn parsed<T: FromStr<Err = crate::outcome::UnknownStatus>>(text: String) -> Result<T, StoreError> {
    text.parse()
        .map_err(|e: crate::outcome::UnknownStatus| StoreError::Corrupt(e.to_string()))
}

/// Rows per multi-row ledger statement: 9 parameters at most, well under both databases'
/// parameter limits.
const LEDGER_ROWS_PER_STATEMENT: usize = 1000;

/// The rows of `records` with this `replace`, the last write of each row only.
fn latest_ledger_rows(
    records: &[LedgerRecord],
    replace: bool,
) -> (Vec<&LedgerNotification>, Vec<(&String, &LedgerDelivery)>) {
    let mut notifications = std::collections::HashMap::new();
    let mut deliveries = std::collections::HashMap::new();
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

const AUDIT_COLUMNS: &str = "tenant_id, seq, id, event_type, user_id, entity_type, entity_id, changes, \
     occurred_at, compliance, recorded_at, prev_hash, hash";

fn audit_record<R: Row>(row: &R) -> Result<AuditRecord, StoreError>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AuditRecord {
        record: NewAuditRecord {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            event_type: row.try_get("event_type")?,
            user_id: row.try_get("user_id")?,
            entity_type: row.try_get("entity_type")?,
            entity_id: row.try_get("entity_id")?,
            changes: row.try_get("changes")?,
            occurred_at: row.try_get("occurred_at")?,
            compliance: row.try_get("compliance")?,
        },
        seq: row.try_get("seq")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

macro_rules! sql_store {
    ($db:ty, $migrations:expr, $lock_head:literal) => {
        #[async_trait]
        impl Store for SqlStore<$db> {
            async fn migrate(&self) -> Result<(), StoreError> {
                $migrations.run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_tenant(
                &self,
                id: &TenantId,
                name: &str,
                (key_id, hash): (&str, &[u8]),
            ) -> Result<Tenant, StoreError> {
                let now = now();
                let mut tx = self.writer.begin().await?;
                let inserted = sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
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
                sqlx::query("INSERT INTO api_keys (id, tenant_id, hash, created_at) VALUES ($1, $2, $3, $4)")
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
                let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| {
                    Ok(Tenant {
                        id: tenant_id(row.try_get("id")?)?,
                        name: row.try_get("name")?,
                        created_at: row.try_get("created_at")?,
                    })
                })
                .transpose()
            }

            async fn count_tenants(&self) -> Result<u64, StoreError> {
                let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("n")?;
                Ok(count as u64)
            }

            async fn add_api_key(
                &self,
                tenant: &TenantId,
                key_id: &str,
                hash: &[u8],
            ) -> Result<ApiKeyInfo, StoreError> {
                let now = now();
                sqlx::query("INSERT INTO api_keys (id, tenant_id, hash, created_at) VALUES ($1, $2, $3, $4)")
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
                let rows = sqlx::query(
                    "SELECT id, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
                )
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        Ok(ApiKeyInfo {
                            id: row.try_get("id")?,
                            created_at: row.try_get("created_at")?,
                            revoked_at: row.try_get::<Option<DateTime<Utc>>, _>("revoked_at")?,
                        })
                    })
                    .collect()
            }

            async fn revoke_api_key(&self, tenant: &TenantId, key_id: &str) -> Result<bool, StoreError> {
                let revoked = sqlx::query(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id = $3",
                )
                .bind(now())
                .bind(key_id)
                .bind(tenant.as_str())
                .execute(&self.writer)
                .await?
                .rows_affected();
                Ok(revoked == 1)
            }

            async fn api_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
                let row = sqlx::query("SELECT tenant_id, hash, revoked_at FROM api_keys WHERE id = $1")
                    .bind(key_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| {
                    Ok(StoredKey {
                        tenant_id: tenant_id(row.try_get("tenant_id")?)?,
                        hash: row.try_get("hash")?,
                        revoked: row.try_get::<Option<DateTime<Utc>>, _>("revoked_at")?.is_some(),
                    })
                })
                .transpose()
            }

            async fn claim_idempotency_key(
                &self,
                tenant: &TenantId,
                key: &str,
                fingerprint: &[u8],
                binding: &KeyBinding,
                expired_before: DateTime<Utc>,
                stale_before: DateTime<Utc>,
            ) -> Result<Claim, StoreError> {
                // An expired claim is removed first, so that the insert below can win.
                sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at < $3")
                    .bind(tenant.as_str())
                    .bind(key)
                    .bind(expired_before)
                    .execute(&self.writer)
                    .await?;
                let event_ids = serde_json::to_string(&binding.event_ids).expect("ids serialize");
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys \
                     (tenant_id, key, fingerprint, event_ids, accepted_at, claimed_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (tenant_id, key) DO NOTHING",
                )
                .bind(tenant.as_str())
                .bind(key)
                .bind(fingerprint)
                .bind(&event_ids)
                .bind(binding.accepted_at)
                .bind(now())
                .execute(&self.writer)
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok(Claim::Claimed);
                }
                let row = sqlx::query(
                    "SELECT fingerprint, status, response, event_ids, accepted_at FROM idempotency_keys \
                     WHERE tenant_id = $1 AND key = $2",
                )
                .bind(tenant.as_str())
                .bind(key)
                .fetch_optional(&self.writer)
                .await?;
                let Some(row) = row else {
                    // Expired between our insert and our read: the caller tries again.
                    return Ok(Claim::Held {
                        fingerprint: fingerprint.to_vec(),
                        response: None,
                    });
                };
                let held: Vec<u8> = row.try_get("fingerprint")?;
                let status: Option<i32> = row.try_get("status")?;
                let response: Option<String> = row.try_get("response")?;
                if held == fingerprint && status.is_none_or(|s| s == i32::from(UNCONFIRMED)) {
                    // Taken over only if it is still unconfirmed or stale: of several
                    // repeats, one wins the update.
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET status = NULL, claimed_at = $1 \
                         WHERE tenant_id = $2 AND key = $3 \
                           AND (status = $4 OR (status IS NULL AND claimed_at < $5))",
                    )
                    .bind(now())
                    .bind(tenant.as_str())
                    .bind(key)
                    .bind(i32::from(UNCONFIRMED))
                    .bind(stale_before)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                    if taken == 1 {
                        let ids: Option<String> = row.try_get("event_ids")?;
                        let accepted_at: Option<DateTime<Utc>> = row.try_get("accepted_at")?;
                        let ids = ids
                            .map(|ids| serde_json::from_str(&ids))
                            .transpose()
                            .map_err(|e| StoreError::Corrupt(format!("idempotency key's event ids: {e}")))?;
                        return Ok(match ids.zip(accepted_at) {
                            Some((event_ids, accepted_at)) => Claim::Resumed(KeyBinding { event_ids, accepted_at }),
                            // Claimed before keys were bound to events: its events are
                            // unknown, so this request sends its own.
                            None => Claim::Claimed,
                        });
                    }
                    return Ok(Claim::Held { fingerprint: held, response: None });
                }
                Ok(Claim::Held {
                    fingerprint: held,
                    response: status.zip(response).map(|(s, r)| (s as u16, r)),
                })
            }

            async fn complete_idempotency_key(
                &self,
                tenant: &TenantId,
                key: &str,
                status: u16,
                response: &str,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE tenant_id = $3 AND key = $4")
                    .bind(i32::from(status))
                    .bind(response)
                    .bind(tenant.as_str())
                    .bind(key)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn unconfirm_idempotency_key(&self, tenant: &TenantId, key: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE idempotency_keys SET status = $1 WHERE tenant_id = $2 AND key = $3 AND status IS NULL")
                    .bind(i32::from(UNCONFIRMED))
                    .bind(tenant.as_str())
                    .bind(key)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn write_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                // Acceptances first, only filling in; then outcomes, replacing. Within each,
                // the last write of a row wins, and each row appears once per statement.
                for replace in [false, true] {
                    let (notifications, deliveries) = latest_ledger_rows(records, replace);
                    let conflict = if replace {
                        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
                         updated_at = excluded.updated_at, \
                         template = COALESCE(excluded.template, notifications.template)"
                    } else {
                        " ON CONFLICT (id) DO NOTHING"
                    };
                    for chunk in notifications.chunks(LEDGER_ROWS_PER_STATEMENT) {
                        let mut insert = QueryBuilder::<$db>::new(
                            "INSERT INTO notifications (id, tenant_id, kind, status, reason, created_at, updated_at, template) ",
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
                        let mut insert = QueryBuilder::<$db>::new(
                            "INSERT INTO deliveries (notification_id, channel, recipient, target, status, attempts, \
                             last_error, reply, updated_at) ",
                        );
                        insert.push_values(chunk, |mut row, (id, d)| {
                            row.push_bind(id.clone())
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
                        "DELETE FROM notifications WHERE id = $1 AND status = 'queued' \
                         AND NOT EXISTS (SELECT 1 FROM deliveries WHERE notification_id = $1 AND attempts > 0)",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if withdrawn == 1 {
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
                let row = sqlx::query(
                    "SELECT id, tenant_id, kind, status, reason, created_at, updated_at, template FROM notifications \
                     WHERE id = $1 AND tenant_id = $2",
                )
                .bind(id)
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let notification = LedgerNotification {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    kind: row.try_get("kind")?,
                    status: parsed(row.try_get("status")?)?,
                    reason: row.try_get("reason")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    template: row
                        .try_get::<Option<String>, _>("template")?
                        .map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
                        .transpose()?,
                };
                let rows = sqlx::query(
                    "SELECT channel, recipient, target, status, attempts, last_error, reply, updated_at \
                     FROM deliveries WHERE notification_id = $1 ORDER BY channel, recipient, target",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                let deliveries = rows
                    .into_iter()
                    .map(|row| {
                        Ok(LedgerDelivery {
                            channel: parsed(row.try_get("channel")?)?,
                            recipient: row.try_get("recipient")?,
                            target: row.try_get("target")?,
                            status: parsed(row.try_get("status")?)?,
                            attempts: row.try_get::<i32, _>("attempts").map(|a| a.max(0) as u32)?,
                            last_error: row.try_get("last_error")?,
                            reply: row.try_get("reply")?,
                            updated_at: row.try_get("updated_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                Ok(Some((notification, deliveries)))
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
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(deleted)
            }

            async fn append_audit(&self, records: &[NewAuditRecord]) -> Result<u64, StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut tenants: Vec<&str> = records.iter().map(|r| r.tenant_id.as_str()).collect();
                tenants.sort_unstable();
                tenants.dedup();
                let mut appended = 0;
                let recorded_at = now();
                for tenant in tenants {
                    sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant_id) DO NOTHING")
                        .bind(tenant)
                        .bind(&chain::GENESIS[..])
                        .execute(&mut *tx)
                        .await?;
                    let head = sqlx::query(concat!("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1", $lock_head))
                        .bind(tenant)
                        .fetch_one(&mut *tx)
                        .await?;
                    let (mut seq, mut prev): (i64, Vec<u8>) = (head.try_get("seq")?, head.try_get("hash")?);
                    // A redelivered event is appended once: by its id, within this batch and
                    // against what is stored (one look-up per statement-sized chunk).
                    let mut seen = std::collections::HashSet::new();
                    let candidates: Vec<&NewAuditRecord> = records
                        .iter()
                        .filter(|r| r.tenant_id == tenant && seen.insert(r.id.as_str()))
                        .collect();
                    let mut stored = std::collections::HashSet::new();
                    for chunk in candidates.chunks(AUDIT_ROWS_PER_STATEMENT) {
                        let mut lookup = QueryBuilder::<$db>::new("SELECT id FROM audit_records WHERE id IN (");
                        let mut ids = lookup.separated(", ");
                        for record in chunk {
                            ids.push_bind(record.id.clone());
                        }
                        lookup.push(")");
                        for row in lookup.build().fetch_all(&mut *tx).await? {
                            stored.insert(row.try_get::<String, _>("id")?);
                        }
                    }
                    // (seq, record, the hash before it, its own hash)
                    let mut rows = Vec::with_capacity(candidates.len());
                    for record in candidates.into_iter().filter(|r| !stored.contains(&r.id)) {
                        seq += 1;
                        let hash = chain::hash(&prev, seq, record).to_vec();
                        rows.push((seq, record, std::mem::replace(&mut prev, hash.clone()), hash));
                    }
                    for chunk in rows.chunks(AUDIT_ROWS_PER_STATEMENT) {
                        let mut insert = QueryBuilder::<$db>::new(
                            "INSERT INTO audit_records (tenant_id, seq, id, event_type, user_id, entity_type, entity_id, \
                             changes, occurred_at, compliance, recorded_at, prev_hash, hash) ",
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

            async fn audit_records(&self, tenant: &TenantId, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
                let mut sql = QueryBuilder::<$db>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_records WHERE tenant_id = "));
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
                let rows = sql.build().fetch_all(&self.pool).await?;
                rows.iter().map(audit_record).collect()
            }

            async fn audit_record(&self, tenant: &TenantId, id: &str) -> Result<Option<AuditRecord>, StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_records WHERE id = $1 AND tenant_id = $2"
                )))
                .bind(id)
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(audit_record).transpose()
            }

            async fn audit_chain(&self, tenant: &TenantId, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_records WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                )))
                .bind(tenant.as_str())
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(audit_record).collect()
            }

            async fn delete_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
                Ok(sqlx::query("DELETE FROM audit_records WHERE recorded_at < $1")
                    .bind(cutoff)
                    .execute(&self.writer)
                    .await?
                    .rows_affected())
            }

            async fn delete_idempotency_keys_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
                Ok(sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(cutoff)
                    .execute(&self.writer)
                    .await?
                    .rows_affected())
            }
        }
    };
}

// SQLite has one writer at a time, so a transaction's reads are already serialized; in
// PostgreSQL the chain head is locked so that instances extend a chain one at a time.
sql_store!(Sqlite, SQLITE_MIGRATIONS, "");
sql_store!(Postgres, POSTGRES_MIGRATIONS, " FOR UPDATE");
