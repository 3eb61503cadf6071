//! Read receipts: who read which chat message, told to its sender once.

use super::StoreError;
use super::conversations::is_member;
use super::events::insert_events;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments};

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

/// The message a receipt is for.
#[derive(sqlx::FromRow)]
struct ReadMessage {
    sender_id: String,
    conversation_id: String,
    payload: String,
}

/// Where read receipts live.
#[async_trait]
pub trait ReadReceiptStore: Send + Sync {
    /// Records that `reader` read a message and, the first time, appends `message:read`
    /// to the sender's log.
    async fn record_read(
        &self,
        tenant: &TenantId,
        message_id: &str,
        reader: &str,
    ) -> Result<ReadReceipt, StoreError>;
}

#[async_trait]
impl<DB> ReadReceiptStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn record_read(
        &self,
        tenant: &TenantId,
        message_id: &str,
        reader: &str,
    ) -> Result<ReadReceipt, StoreError> {
        // A stored message never changes, so it is read before the transaction,
        // which then starts with its write (on SQLite a read that turns into a write
        // can fail against a concurrent commit).
        let message: Option<ReadMessage> = sqlx::query_as(
            "SELECT sender_id, conversation_id, payload FROM chat_messages \
             WHERE tenant_id = $1 AND message_id = $2",
        )
        .bind(tenant.as_str())
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(message) = message else {
            return Ok(ReadReceipt::UnknownMessage);
        };
        let payload: serde_json::Value = serde_json::from_str(&message.payload)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let recipient = match payload["recipientIds"].as_array() {
            Some(ids) => ids.iter().any(|id| id == reader),
            // Sent to its conversation's members, whom the message does not list.
            None => {
                reader != message.sender_id
                    && is_member(&self.pool, tenant, &message.conversation_id, reader).await?
            }
        };
        if !recipient {
            return Ok(ReadReceipt::NotARecipient);
        }
        let read_at = now();
        let mut tx = self.writer.begin().await?;
        let recorded = sqlx::query(
            "INSERT INTO chat_reads (tenant_id, message_id, user_id, read_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, message_id, user_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(message_id)
        .bind(reader)
        .bind(read_at)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(recorded) == 0 {
            return Ok(ReadReceipt::AlreadyRead);
        }
        let event = serde_json::json!({
            "messageId": message_id, "conversationId": message.conversation_id,
            "userId": reader, "readAt": read_at,
        })
        .to_string();
        let sender = message.sender_id;
        insert_events::<DB>(&mut tx, tenant, &[(sender.as_str(), "message:read", event)]).await?;
        tx.commit().await?;
        Ok(ReadReceipt::Recorded { sender })
    }
}
