//! Chat messages: stored once, numbered per conversation, and logged to each recipient.

use super::StoreError;
use super::events::insert_events;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments};

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

/// Where chat messages live.
#[async_trait]
pub trait ChatStore: Send + Sync {
    /// Stores a chat message with the next sequence number of its conversation and
    /// appends `message:new` to each recipient's log, in one transaction; answers the
    /// sequence, or `None` if the message was stored before (nothing is appended then).
    async fn record_chat(
        &self,
        tenant: &TenantId,
        chat: &NewChat<'_>,
    ) -> Result<Option<i64>, StoreError>;
}

#[async_trait]
impl<DB> ChatStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn record_chat(
        &self,
        tenant: &TenantId,
        chat: &NewChat<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.writer.begin().await?;
        // Taking the next number locks the conversation's row until commit, so
        // that its messages reach every log in the order they are numbered.
        let (sequence,): (i64,) = sqlx::query_as(
            "INSERT INTO conversations (tenant_id, conversation_id, last_sequence) \
             VALUES ($1, $2, 1) ON CONFLICT (tenant_id, conversation_id) DO UPDATE \
             SET last_sequence = conversations.last_sequence + 1 RETURNING last_sequence",
        )
        .bind(tenant.as_str())
        .bind(chat.conversation_id)
        .fetch_one(&mut *tx)
        .await?;
        let mut payload = chat.payload.clone();
        payload["sequence"] = serde_json::json!(sequence);
        let payload = payload.to_string();
        let stored = sqlx::query(
            "INSERT INTO chat_messages (tenant_id, message_id, conversation_id, sender_id, \
             sequence, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, message_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(chat.message_id)
        .bind(chat.conversation_id)
        .bind(chat.sender_id)
        .bind(sequence)
        .bind(payload.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(stored) == 0 {
            // A redelivery: the message and its events exist; the number is not used.
            tx.rollback().await?;
            return Ok(None);
        }
        let events: Vec<(&str, &str, String)> = chat
            .recipients
            .iter()
            .map(|user| (*user, "message:new", payload.clone()))
            .collect();
        insert_events::<DB>(&mut tx, tenant, &events).await?;
        tx.commit().await?;
        Ok(Some(sequence))
    }
}
