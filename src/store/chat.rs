//! Chat messages: stored once, numbered per conversation, and logged to each recipient:
//! those the message names, or its conversation's members, read a page at a time.

use super::StoreError;
use super::conversations::member_page;
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
    pub audience: Audience<'a>,
    /// The message as clients see it; its `sequence` is added when it is stored.
    pub payload: serde_json::Value,
}

/// Who a chat message is for.
#[derive(Debug, Clone)]
pub enum Audience<'a> {
    /// The recipients the message names.
    Listed(Vec<&'a str>),
    /// The conversation's members but the sender, read `page` at a time, so that a
    /// conversation of any size is fanned out in bounded memory.
    Members {
        /// Members per page (at least 1).
        page: usize,
    },
}

/// What recording a chat message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored with this sequence number, and appended to every recipient's log.
    Stored(i64),
    /// Stored before (a redelivery): nothing was appended.
    Before,
    /// Nobody to deliver to (no recipient but the sender; an unknown or empty
    /// conversation): nothing was stored.
    NoAudience,
}

/// `message:new` for each of `users`, as [`insert_events`] takes them.
fn message_new<'u>(
    users: impl Iterator<Item = &'u str>,
    payload: &str,
) -> Vec<(&'u str, &'static str, String)> {
    users
        .map(|user| (user, "message:new", payload.to_owned()))
        .collect()
}

/// Where chat messages live.
#[async_trait]
pub trait ChatStore: Send + Sync {
    /// Stores a chat message with the next sequence number of its conversation and
    /// appends `message:new` to each recipient's log, in one transaction: a message is
    /// stored with all its events or not at all, so that a redelivery, which finds it
    /// stored, appends nothing.
    async fn record_chat(
        &self,
        tenant: &TenantId,
        chat: &NewChat<'_>,
    ) -> Result<Recorded, StoreError>;
}

#[async_trait]
impl<DB> ChatStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn record_chat(
        &self,
        tenant: &TenantId,
        chat: &NewChat<'_>,
    ) -> Result<Recorded, StoreError> {
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
            return Ok(Recorded::Before);
        }
        let appended = match &chat.audience {
            Audience::Listed(users) => {
                let events = message_new(users.iter().copied(), &payload);
                insert_events::<DB>(&mut tx, tenant, &events).await?;
                events.len()
            }
            Audience::Members { page } => {
                let page = (*page).max(1);
                let (mut after, mut appended) = (String::new(), 0);
                loop {
                    let members = member_page::<DB>(
                        &mut tx,
                        tenant,
                        chat.conversation_id,
                        Some(chat.sender_id),
                        &after,
                        page,
                    )
                    .await?;
                    let events = message_new(members.iter().map(String::as_str), &payload);
                    insert_events::<DB>(&mut tx, tenant, &events).await?;
                    appended += members.len();
                    match members.last() {
                        Some(last) if members.len() == page => after = last.clone(),
                        _ => break,
                    }
                }
                appended
            }
        };
        if appended == 0 {
            // Stored for no one, a message could never be read nor resent: leave no trace.
            tx.rollback().await?;
            return Ok(Recorded::NoAudience);
        }
        tx.commit().await?;
        Ok(Recorded::Stored(sequence))
    }
}
