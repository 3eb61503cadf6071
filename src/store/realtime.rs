//! Real-time state in the store: chat messages (stored once, numbered per conversation),
//! each user's event log that reconnecting clients replay from their cursor, the cursors
//! users acknowledged, and the key that signs real-time tokens.

use super::StoreError;
use super::sql::{SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};

/// A chat message to store and fan out.
#[derive(Debug, Clone)]
pub struct NewChat<'a> {
    /// The sender's id for it: storing the same id twice stores it once.
    pub message_id: &'a str,
    /// Its conversation, which numbers its messages.
    pub conversation_id: &'a str,
    /// Who sent it.
    pub sender_id: &'a str,
    /// Who gets a `message:new` event.
    pub recipients: Vec<&'a str>,
    /// The message as clients see it; its `sequence` is added when it is stored.
    pub payload: serde_json::Value,
}

/// One event of a user's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its place in the user's log: the cursor clients resume from.
    pub cursor: i64,
    /// `message:new`, `message:read`, `notification:new`, ...
    pub kind: String,
    /// The event's data, as JSON text.
    pub payload: String,
}

/// Where real-time state lives.
#[async_trait]
pub trait RealtimeStore: Send + Sync {
    /// Stores a chat message with the next sequence number of its conversation and
    /// appends `message:new` to each recipient's log, in one transaction; answers the
    /// sequence, or `None` if the message was stored before (nothing is appended then).
    async fn record_chat(
        &self,
        tenant: &TenantId,
        chat: &NewChat<'_>,
    ) -> Result<Option<i64>, StoreError>;

    /// Appends events to users' logs: (user, kind, payload).
    async fn append_events(
        &self,
        tenant: &TenantId,
        events: &[(&str, &str, String)],
    ) -> Result<(), StoreError>;

    /// Up to `limit` of a user's events after `cursor`, oldest first.
    async fn events_after(
        &self,
        tenant: &TenantId,
        user: &str,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Records that the user has everything up to `cursor` (never moving back).
    async fn acknowledge(
        &self,
        tenant: &TenantId,
        user: &str,
        cursor: i64,
    ) -> Result<(), StoreError>;

    /// The cursor the user last acknowledged, 0 if none.
    async fn acknowledged(&self, tenant: &TenantId, user: &str) -> Result<i64, StoreError>;

    /// The key that signs real-time tokens, made by whichever instance asks first.
    async fn realtime_key(&self, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Deletes events stored before `cutoff`; answers how many.
    async fn delete_realtime_events_before(&self, cutoff: DateTime<Utc>)
    -> Result<u64, StoreError>;
}

/// Rows per multi-row event insert: 5 parameters each.
const EVENTS_PER_STATEMENT: usize = 1000;

macro_rules! realtime_store {
    ($db:ty) => {
        impl SqlStore<$db> {
            async fn insert_events(
                executor: &mut <$db as sqlx::Database>::Connection,
                tenant: &TenantId,
                events: &[(&str, &str, String)],
            ) -> Result<(), StoreError> {
                let created_at = now();
                for chunk in events.chunks(EVENTS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO realtime_events (tenant_id, user_id, kind, payload, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, (user, kind, payload)| {
                        row.push_bind(tenant.as_str())
                            .push_bind(*user)
                            .push_bind(*kind)
                            .push_bind(payload.as_str())
                            .push_bind(created_at);
                    });
                    insert.build().execute(&mut *executor).await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl RealtimeStore for SqlStore<$db> {
            async fn record_chat(
                &self,
                tenant: &TenantId,
                chat: &NewChat<'_>,
            ) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                // Taking the next number locks the conversation's row until commit, so
                // that its messages reach every log in the order they are numbered.
                let sequence: i64 = sqlx::query(
                    "INSERT INTO conversations (tenant_id, conversation_id, last_sequence) VALUES ($1, $2, 1) \
                     ON CONFLICT (tenant_id, conversation_id) DO UPDATE \
                     SET last_sequence = conversations.last_sequence + 1 RETURNING last_sequence",
                )
                .bind(tenant.as_str())
                .bind(chat.conversation_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("last_sequence")?;
                let mut payload = chat.payload.clone();
                payload["sequence"] = serde_json::json!(sequence);
                let payload = payload.to_string();
                let stored = sqlx::query(
                    "INSERT INTO chat_messages (tenant_id, message_id, conversation_id, sender_id, sequence, \
                     payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant_id, message_id) DO NOTHING",
                )
                .bind(tenant.as_str())
                .bind(chat.message_id)
                .bind(chat.conversation_id)
                .bind(chat.sender_id)
                .bind(sequence)
                .bind(&payload)
                .bind(now())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if stored == 0 {
                    // A redelivery: the message and its events exist; the number is not used.
                    tx.rollback().await?;
                    return Ok(None);
                }
                let events: Vec<(&str, &str, String)> = chat
                    .recipients
                    .iter()
                    .map(|user| (*user, "message:new", payload.clone()))
                    .collect();
                Self::insert_events(&mut tx, tenant, &events).await?;
                tx.commit().await?;
                Ok(Some(sequence))
            }

            async fn append_events(
                &self,
                tenant: &TenantId,
                events: &[(&str, &str, String)],
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::insert_events(&mut tx, tenant, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn events_after(
                &self,
                tenant: &TenantId,
                user: &str,
                cursor: i64,
                limit: i64,
            ) -> Result<Vec<StoredEvent>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, kind, payload FROM realtime_events \
                     WHERE tenant_id = $1 AND user_id = $2 AND id > $3 ORDER BY id LIMIT $4",
                )
                .bind(tenant.as_str())
                .bind(user)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredEvent {
                            cursor: row.try_get("id")?,
                            kind: row.try_get("kind")?,
                            payload: row.try_get("payload")?,
                        })
                    })
                    .collect()
            }

            async fn acknowledge(
                &self,
                tenant: &TenantId,
                user: &str,
                cursor: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO realtime_acks (tenant_id, user_id, cursor) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant_id, user_id) DO UPDATE SET cursor = excluded.cursor \
                     WHERE excluded.cursor > realtime_acks.cursor",
                )
                .bind(tenant.as_str())
                .bind(user)
                .bind(cursor)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn acknowledged(&self, tenant: &TenantId, user: &str) -> Result<i64, StoreError> {
                let row = sqlx::query(
                    "SELECT cursor FROM realtime_acks WHERE tenant_id = $1 AND user_id = $2",
                )
                .bind(tenant.as_str())
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some(row) => row.try_get("cursor")?,
                    None => 0,
                })
            }

            async fn realtime_key(&self, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
                sqlx::query("INSERT INTO realtime_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                    .bind(candidate)
                    .execute(&self.pool)
                    .await?;
                Ok(sqlx::query("SELECT key FROM realtime_keys WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("key")?)
            }

            async fn delete_realtime_events_before(
                &self,
                cutoff: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                Ok(sqlx::query("DELETE FROM realtime_events WHERE created_at < $1")
                    .bind(cutoff)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }
        }
    };
}

realtime_store!(Sqlite);
realtime_store!(Postgres);
