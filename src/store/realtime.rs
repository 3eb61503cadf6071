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

/// What recording a read receipt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadReceipt {
    /// The tenant has no message with this id.
    UnknownMessage,
    /// The reader is not one of the message's recipients.
    NotARecipient,
    /// Recorded, and `message:read` appended to the sender's log.
    Recorded {
        /// Who sent the message, to be poked.
        sender: String,
    },
    /// The reader had read it already.
    AlreadyRead,
}

/// An in-app notification in a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// Its id (the push notification's).
    pub id: String,
    /// What it says, as JSON text.
    pub payload: String,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
    /// When the user read it.
    pub read_at: Option<DateTime<Utc>>,
}

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

    /// Records that `reader` read a message and, the first time, appends `message:read`
    /// to the sender's log.
    async fn record_read(
        &self,
        tenant: &TenantId,
        message_id: &str,
        reader: &str,
    ) -> Result<ReadReceipt, StoreError>;

    /// Puts an in-app notification into each of `users`' inboxes and appends
    /// `notification:new` to their logs; a redelivery adds nothing.
    async fn add_to_inboxes(
        &self,
        tenant: &TenantId,
        users: &[&str],
        id: &str,
        payload: &str,
    ) -> Result<(), StoreError>;

    /// A user's inbox, newest first.
    async fn inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        limit: i64,
    ) -> Result<Vec<InboxItem>, StoreError>;

    /// Changes a user's inbox: marks one item read (`Some(id)`, `read`), deletes one
    /// (`Some(id)`, not `read`) or clears all (`None`); appends the matching event to the
    /// user's log when something changed. Answers how many items changed.
    async fn change_inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        id: Option<&str>,
        read: bool,
    ) -> Result<u64, StoreError>;

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
                let mut tx = self.writer.begin().await?;
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
                let mut tx = self.writer.begin().await?;
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
                .execute(&self.writer)
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
                    .execute(&self.writer)
                    .await?;
                Ok(sqlx::query("SELECT key FROM realtime_keys WHERE id = 1")
                    .fetch_one(&self.writer)
                    .await?
                    .try_get("key")?)
            }

            async fn delete_realtime_events_before(
                &self,
                cutoff: DateTime<Utc>,
            ) -> Result<u64, StoreError> {
                Ok(sqlx::query("DELETE FROM realtime_events WHERE created_at < $1")
                    .bind(cutoff)
                    .execute(&self.writer)
                    .await?
                    .rows_affected())
            }

            async fn record_read(
                &self,
                tenant: &TenantId,
                message_id: &str,
                reader: &str,
            ) -> Result<ReadReceipt, StoreError> {
                // A stored message never changes, so it is read before the transaction,
                // which then starts with its write (on SQLite a read that turns into a write
                // can fail against a concurrent commit).
                let row = sqlx::query(
                    "SELECT sender_id, conversation_id, payload FROM chat_messages \
                     WHERE tenant_id = $1 AND message_id = $2",
                )
                .bind(tenant.as_str())
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    return Ok(ReadReceipt::UnknownMessage);
                };
                let sender: String = row.try_get("sender_id")?;
                let conversation: String = row.try_get("conversation_id")?;
                let payload: serde_json::Value =
                    serde_json::from_str(&row.try_get::<String, _>("payload")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let recipient = payload["recipientIds"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == reader));
                if !recipient {
                    return Ok(ReadReceipt::NotARecipient);
                }
                let read_at = now();
                let mut tx = self.writer.begin().await?;
                let recorded = sqlx::query(
                    "INSERT INTO chat_reads (tenant_id, message_id, user_id, read_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, message_id, user_id) DO NOTHING",
                )
                .bind(tenant.as_str())
                .bind(message_id)
                .bind(reader)
                .bind(read_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if recorded == 0 {
                    return Ok(ReadReceipt::AlreadyRead);
                }
                let event = serde_json::json!({
                    "messageId": message_id, "conversationId": conversation,
                    "userId": reader, "readAt": read_at,
                })
                .to_string();
                Self::insert_events(&mut tx, tenant, &[(sender.as_str(), "message:read", event)]).await?;
                tx.commit().await?;
                Ok(ReadReceipt::Recorded { sender })
            }

            async fn add_to_inboxes(
                &self,
                tenant: &TenantId,
                users: &[&str],
                id: &str,
                payload: &str,
            ) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                let created_at = now();
                let mut events = Vec::new();
                for user in users {
                    let added = sqlx::query(
                        "INSERT INTO inbox_items (tenant_id, user_id, id, payload, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, user_id, id) DO NOTHING",
                    )
                    .bind(tenant.as_str())
                    .bind(*user)
                    .bind(id)
                    .bind(payload)
                    .bind(created_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if added == 1 {
                        events.push((*user, "notification:new", payload.to_owned()));
                    }
                }
                Self::insert_events(&mut tx, tenant, &events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn inbox(
                &self,
                tenant: &TenantId,
                user: &str,
                limit: i64,
            ) -> Result<Vec<InboxItem>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, payload, created_at, read_at FROM inbox_items \
                     WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3",
                )
                .bind(tenant.as_str())
                .bind(user)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(InboxItem {
                            id: row.try_get("id")?,
                            payload: row.try_get("payload")?,
                            created_at: row.try_get("created_at")?,
                            read_at: row.try_get("read_at")?,
                        })
                    })
                    .collect()
            }

            async fn change_inbox(
                &self,
                tenant: &TenantId,
                user: &str,
                id: Option<&str>,
                read: bool,
            ) -> Result<u64, StoreError> {
                let mut tx = self.writer.begin().await?;
                let at = now();
                let (changed, kind) = match (id, read) {
                    (Some(id), true) => (
                        sqlx::query(
                            "UPDATE inbox_items SET read_at = $4 WHERE tenant_id = $1 AND user_id = $2 \
                             AND id = $3 AND read_at IS NULL",
                        )
                        .bind(tenant.as_str())
                        .bind(user)
                        .bind(id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                        "notification:read",
                    ),
                    (Some(id), false) => (
                        sqlx::query("DELETE FROM inbox_items WHERE tenant_id = $1 AND user_id = $2 AND id = $3")
                            .bind(tenant.as_str())
                            .bind(user)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected(),
                        "notification:deleted",
                    ),
                    (None, _) => (
                        sqlx::query("DELETE FROM inbox_items WHERE tenant_id = $1 AND user_id = $2")
                            .bind(tenant.as_str())
                            .bind(user)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected(),
                        "notification:cleared",
                    ),
                };
                if changed > 0 {
                    let event = serde_json::json!({"id": id, "at": at}).to_string();
                    Self::insert_events(&mut tx, tenant, &[(user, kind, event)]).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }

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
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, user_id, instance_id) DO UPDATE \
                     SET connections = presence.connections + excluded.connections, last_seen = excluded.last_seen",
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
                        "UPDATE presence SET connections = CASE WHEN connections + $4 < 0 THEN 0 ELSE connections + $4 END \
                         WHERE tenant_id = $1 AND user_id = $2 AND instance_id = $3",
                    )
                    .bind(tenant.as_str())
                    .bind(user)
                    .bind(instance)
                    .bind(delta)
                    .execute(&mut *tx)
                    .await?;
                }
                let total: i64 = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(connections), 0) AS BIGINT) AS total FROM presence \
                     WHERE tenant_id = $1 AND user_id = $2",
                )
                .bind(tenant.as_str())
                .bind(user)
                .fetch_one(&mut *tx)
                .await?
                .try_get("total")?;
                tx.commit().await?;
                Ok(total)
            }

            async fn touch_presence(&self, instance: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE presence SET last_seen = $2 WHERE instance_id = $1 AND connections > 0")
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
                let mut query = QueryBuilder::<$db>::new(
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
                let rows = query.build().fetch_all(&self.pool).await?;
                let mut found = std::collections::HashMap::new();
                for row in &rows {
                    let user: String = row.try_get("user_id")?;
                    let live: i64 = row.try_get("live")?;
                    let last_seen: Option<DateTime<Utc>> = row.try_get("last_seen")?;
                    found.insert(user, (live > 0, last_seen));
                }
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
        }
    };
}

realtime_store!(Sqlite);
realtime_store!(Postgres);
