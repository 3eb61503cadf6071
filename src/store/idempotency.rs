//! Idempotency keys: a key is claimed by the first request that carries it and bound to
//! the events that request publishes, so that a repeat is answered the same (or, when
//! its events were not confirmed, publishes the same events again).

use super::StoreError;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments};

/// The events an idempotency key stands for: bound to the key before they are published,
/// so that every attempt with the key publishes the same envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBinding {
    /// The events' ids, in the order sent.
    pub event_ids: Vec<String>,
    /// When they were accepted (the envelopes' `createdAt`).
    pub accepted_at: DateTime<Utc>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or had expired): this request owns it now, with its binding.
    Claimed,
    /// An earlier request with the key did not see its events confirmed (or its process
    /// died): this request owns it now and publishes the same events again.
    Resumed(KeyBinding),
    /// Another request holds the key.
    Held {
        /// Its fingerprint, to tell a repeat from a different request.
        fingerprint: Vec<u8>,
        /// Its answer, once it has one: status and JSON body.
        response: Option<(u16, String)>,
    },
}

/// The status of an idempotency key whose events were not confirmed: what the send was
/// answered, and the mark that a repeat publishes them again.
const UNCONFIRMED: u16 = 503;

/// A claimed key's row, as another request with the key finds it.
#[derive(sqlx::FromRow)]
struct HeldKey {
    fingerprint: Vec<u8>,
    status: Option<i32>,
    response: Option<String>,
    event_ids: Option<String>,
    accepted_at: Option<DateTime<Utc>>,
}

/// One write of a group ([`IdempotencyStore::write_idempotency_keys`]).
#[derive(Debug, Clone)]
pub enum KeyWrite<'a> {
    /// Claim a key, as [`IdempotencyStore::claim_idempotency_key`] does.
    Claim {
        /// The key's tenant.
        tenant: &'a TenantId,
        /// The key.
        key: &'a str,
        /// The request's fingerprint.
        fingerprint: &'a [u8],
        /// The events the request would publish.
        binding: &'a KeyBinding,
        /// A claim older than this is taken over as if free.
        expired_before: DateTime<Utc>,
        /// An unanswered claim older than this is resumed.
        stale_before: DateTime<Utc>,
    },
    /// Record an answer, as [`IdempotencyStore::complete_idempotency_key`] does.
    Complete {
        /// The key's tenant.
        tenant: &'a TenantId,
        /// The key.
        key: &'a str,
        /// The answer's status.
        status: u16,
        /// The answer's JSON body.
        response: &'a str,
    },
}

/// Where idempotency keys live.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Runs `writes` in the order given, in one transaction (one commit: on SQLite, one
    /// fsync for the group); answers each claim's outcome (`None` for a completion).
    /// `Err` when the group could not be committed: none of it took effect.
    async fn write_idempotency_keys(
        &self,
        writes: &[KeyWrite<'_>],
    ) -> Result<Vec<Option<Claim>>, StoreError>;

    /// Claims an idempotency key for a request with `fingerprint`, binding it to
    /// `binding`; a claim older than `expired_before` is taken over as if free. A claim
    /// whose events were not confirmed, or whose request started before `stale_before`
    /// and never answered, is resumed with its own binding.
    async fn claim_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &[u8],
        binding: &KeyBinding,
        expired_before: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Claim, StoreError>;

    /// Records the answer of the request that claimed the key.
    async fn complete_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError>;

    /// Marks a claimed key's events as not confirmed, so that a repeat publishes them
    /// again; keeps the binding.
    async fn unconfirm_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<(), StoreError>;

    /// Deletes idempotency keys created before `cutoff`; answers how many.
    async fn delete_idempotency_keys_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// Claims a key on `connection` (see [`IdempotencyStore::claim_idempotency_key`]); `times`
/// are its expiry and staleness bounds.
async fn claim_on<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
    key: &str,
    fingerprint: &[u8],
    binding: &KeyBinding,
    (expired_before, stale_before): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Claim, StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> &'a [u8]: Param<'a, DB>,
    String: Column<DB>,
    i32: Column<DB>,
    Vec<u8>: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    // An expired claim is removed first, so that the insert below can win.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at < $3",
    )
    .bind(tenant.as_str())
    .bind(key)
    .bind(expired_before)
    .execute(&mut *connection)
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
    .execute(&mut *connection)
    .await?;
    if DB::rows_affected(inserted) == 1 {
        return Ok(Claim::Claimed);
    }
    let held: Option<HeldKey> = sqlx::query_as(
        "SELECT fingerprint, status, response, event_ids, accepted_at FROM idempotency_keys \
         WHERE tenant_id = $1 AND key = $2",
    )
    .bind(tenant.as_str())
    .bind(key)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(held) = held else {
        // Expired between our insert and our read: the caller tries again.
        return Ok(Claim::Held {
            fingerprint: fingerprint.to_vec(),
            response: None,
        });
    };
    let unconfirmed = i32::from(UNCONFIRMED);
    if held.fingerprint == fingerprint && held.status.is_none_or(|s| s == unconfirmed) {
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
        .bind(unconfirmed)
        .bind(stale_before)
        .execute(&mut *connection)
        .await?;
        if DB::rows_affected(taken) == 1 {
            let ids = held
                .event_ids
                .map(|ids| serde_json::from_str(&ids))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("idempotency key's event ids: {e}")))?;
            return Ok(match ids.zip(held.accepted_at) {
                Some((event_ids, accepted_at)) => Claim::Resumed(KeyBinding {
                    event_ids,
                    accepted_at,
                }),
                // Claimed before keys were bound to events: its events are
                // unknown, so this request sends its own.
                None => Claim::Claimed,
            });
        }
        return Ok(Claim::Held {
            fingerprint: held.fingerprint,
            response: None,
        });
    }
    Ok(Claim::Held {
        fingerprint: held.fingerprint,
        response: held.status.zip(held.response).map(|(s, r)| (s as u16, r)),
    })
}

/// Records a key's answer on `connection`.
async fn complete_on<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
    key: &str,
    status: u16,
    response: &str,
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
    i32: Column<DB>,
{
    sqlx::query(
        "UPDATE idempotency_keys SET status = $1, response = $2 \
         WHERE tenant_id = $3 AND key = $4",
    )
    .bind(i32::from(status))
    .bind(response)
    .bind(tenant.as_str())
    .bind(key)
    .execute(connection)
    .await?;
    Ok(())
}

#[async_trait]
impl<DB> IdempotencyStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    for<'a> &'a [u8]: Param<'a, DB>,
    String: Column<DB>,
    i32: Column<DB>,
    Vec<u8>: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn write_idempotency_keys(
        &self,
        writes: &[KeyWrite<'_>],
    ) -> Result<Vec<Option<Claim>>, StoreError> {
        // By key (a stable sort keeps one key's writes in the order given), so that
        // groups of several instances lock keys in one order on PostgreSQL and never wait
        // on each other in a cycle.
        let mut order: Vec<usize> = (0..writes.len()).collect();
        order.sort_by_key(|&i| match writes[i] {
            KeyWrite::Claim { tenant, key, .. } | KeyWrite::Complete { tenant, key, .. } => {
                (tenant.as_str(), key)
            }
        });
        let mut tx = self.writer.begin().await?;
        let mut outcomes: Vec<Option<Claim>> = vec![None; writes.len()];
        for i in order {
            outcomes[i] = match writes[i] {
                KeyWrite::Claim {
                    tenant,
                    key,
                    fingerprint,
                    binding,
                    expired_before,
                    stale_before,
                } => Some(
                    claim_on::<DB>(
                        &mut tx,
                        tenant,
                        key,
                        fingerprint,
                        binding,
                        (expired_before, stale_before),
                    )
                    .await?,
                ),
                KeyWrite::Complete {
                    tenant,
                    key,
                    status,
                    response,
                } => {
                    complete_on::<DB>(&mut tx, tenant, key, status, response).await?;
                    None
                }
            };
        }
        tx.commit().await?;
        Ok(outcomes)
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
        let mut connection = self.writer.acquire().await?;
        let times = (expired_before, stale_before);
        claim_on::<DB>(&mut connection, tenant, key, fingerprint, binding, times).await
    }

    async fn complete_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError> {
        let mut connection = self.writer.acquire().await?;
        complete_on::<DB>(&mut connection, tenant, key, status, response).await
    }

    async fn unconfirm_idempotency_key(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1 \
             WHERE tenant_id = $2 AND key = $3 AND status IS NULL",
        )
        .bind(i32::from(UNCONFIRMED))
        .bind(tenant.as_str())
        .bind(key)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn delete_idempotency_keys_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.writer)
            .await?;
        Ok(DB::rows_affected(deleted))
    }
}
