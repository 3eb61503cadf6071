//! Chat messages: stored once, numbered per conversation, and logged to each recipient:
//! those the message names, or its conversation's members, read a page at a time.

use super::StoreError;
use super::conversations::member_page;
use super::events::{insert_events, insert_rows};
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

/// Who a stored chat message went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The users it named, and its sender.
    Listed(Vec<String>),
    /// Its conversation's members (its sender among them).
    Members,
}

/// A stored chat message as a change to it needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChat {
    /// Its conversation.
    pub conversation_id: String,
    /// Who sent it.
    pub sender_id: String,
    /// Who it went to.
    pub sent: Sent,
}

/// What a change to a stored message reads of it: its conversation, sender and payload
/// (whose `recipientIds` say whom it named).
type ChatRow = (String, String, String);

const CHAT_ROW: &str = "SELECT conversation_id, sender_id, payload FROM chat_messages \
                        WHERE tenant_id = $1 AND message_id = $2";

fn stored_chat((conversation_id, sender_id, payload): ChatRow) -> StoredChat {
    let listed = serde_json::from_str::<serde_json::Value>(&payload)
        .ok()
        .and_then(|p| p.get("recipientIds").and_then(|r| r.as_array()).cloned());
    let sent = match listed {
        Some(ids) => {
            let mut users: Vec<String> = ids
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .chain([sender_id.clone()])
                .collect();
            users.sort_unstable();
            users.dedup();
            Sent::Listed(users)
        }
        None => Sent::Members,
    };
    StoredChat {
        conversation_id,
        sender_id,
        sent,
    }
}

/// What gives each user the payload of a change to a message: the user, the message.
pub type PayloadFor<'f> = dyn Fn(&str, &StoredChat) -> String + Send + Sync + 'f;

/// Each of `users` with each of `kinds`, under the user's payload, as [`insert_rows`]
/// takes them.
fn change_rows<'a>(
    users: &'a [String],
    kinds: &[&'a str],
    chat: &StoredChat,
    payload_for: &PayloadFor<'_>,
) -> Vec<(&'a str, &'a str, String)> {
    let mut rows = Vec::with_capacity(users.len() * kinds.len());
    for user in users {
        let payload = payload_for(user, chat);
        for kind in kinds {
            rows.push((user.as_str(), *kind, payload.clone()));
        }
    }
    rows
}

/// Where chat messages live.
#[async_trait]
pub trait ChatStore: Send + Sync {
    /// The message `message_id` of the tenant, if it is stored.
    async fn chat_message(
        &self,
        tenant: &TenantId,
        message_id: &str,
    ) -> Result<Option<StoredChat>, StoreError>;

    /// Appends a change to a stored message to the log of everyone it went to (its listed
    /// recipients and sender, or its conversation's members, `page` at a time), each user
    /// getting the events `kinds` with the payload `payload_for(user)`, in one transaction
    /// and once per `update_id`. Answers the message, or `None` when it is not stored.
    async fn record_message_change(
        &self,
        tenant: &TenantId,
        message_id: &str,
        update_id: &str,
        kinds: &[&str],
        page: usize,
        payload_for: &PayloadFor<'_>,
    ) -> Result<Option<StoredChat>, StoreError>;

    /// Stores a chat message with the next sequence number of its conversation and
    /// appends `message:new` to each recipient's log, in one transaction: a message is
    /// stored with all its events or not at all, so that a redelivery, which finds it
    /// stored, appends nothing.
    async fn record_chat(
        &self,
        tenant: &TenantId,
        chat: &NewChat<'_>,
    ) -> Result<Recorded, StoreError>;

    /// Records several chat messages, each as [`ChatStore::record_chat`] does, in one
    /// transaction: one commit (one fsync) for the group. Each is recorded in a savepoint
    /// of its own, so that one stored before, with no audience or that fails leaves no
    /// trace while the others are kept. Answers each message's outcome in the order given;
    /// `Err` when the group as a whole could not be committed (nothing is recorded).
    ///
    /// The messages should be of different conversations (one worker instance has one
    /// message of a conversation under way at a time): they are recorded in the order of
    /// their conversations, so that groups of several instances lock conversations in
    /// one order and never wait on each other in a cycle.
    async fn record_chats(
        &self,
        chats: &[(&TenantId, NewChat<'_>)],
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError>;
}

/// Records `chat` on `connection`, inside a transaction (or savepoint) of its caller's,
/// which the caller keeps when this answers [`Recorded::Stored`] and rolls back
/// otherwise.
async fn record_on<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
    chat: &NewChat<'_>,
) -> Result<Recorded, StoreError>
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
    // Taking the next number locks the conversation's row until commit, so that its
    // messages reach every log in the order they are numbered.
    let (sequence,): (i64,) = sqlx::query_as(
        "INSERT INTO conversations (tenant_id, conversation_id, last_sequence) \
         VALUES ($1, $2, 1) ON CONFLICT (tenant_id, conversation_id) DO UPDATE \
         SET last_sequence = conversations.last_sequence + 1 RETURNING last_sequence",
    )
    .bind(tenant.as_str())
    .bind(chat.conversation_id)
    .fetch_one(&mut *connection)
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
    .execute(&mut *connection)
    .await?;
    if DB::rows_affected(stored) == 0 {
        // A redelivery: the message and its events exist; the number is not used.
        return Ok(Recorded::Before);
    }
    let appended = match &chat.audience {
        Audience::Listed(users) => {
            let events = message_new(users.iter().copied(), &payload);
            insert_events::<DB>(connection, tenant, &events).await?;
            events.len()
        }
        Audience::Members { page } => {
            let page = (*page).max(1);
            let (mut after, mut appended) = (String::new(), 0);
            loop {
                let members = member_page::<DB>(
                    connection,
                    tenant,
                    chat.conversation_id,
                    Some(chat.sender_id),
                    &after,
                    page,
                )
                .await?;
                let events = message_new(members.iter().map(String::as_str), &payload);
                insert_events::<DB>(connection, tenant, &events).await?;
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
        return Ok(Recorded::NoAudience);
    }
    Ok(Recorded::Stored(sequence))
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
    async fn chat_message(
        &self,
        tenant: &TenantId,
        message_id: &str,
    ) -> Result<Option<StoredChat>, StoreError> {
        let row: Option<ChatRow> = sqlx::query_as(CHAT_ROW)
            .bind(tenant.as_str())
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(stored_chat))
    }

    async fn record_message_change(
        &self,
        tenant: &TenantId,
        message_id: &str,
        update_id: &str,
        kinds: &[&str],
        page: usize,
        payload_for: &PayloadFor<'_>,
    ) -> Result<Option<StoredChat>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let row: Option<ChatRow> = sqlx::query_as(CHAT_ROW)
            .bind(tenant.as_str())
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(chat) = row.map(stored_chat) else {
            return Ok(None);
        };
        match &chat.sent {
            Sent::Listed(users) => {
                let rows = change_rows(users, kinds, &chat, payload_for);
                insert_rows::<DB>(&mut tx, tenant, &rows, Some(update_id)).await?;
            }
            Sent::Members => {
                let conversation = chat.conversation_id.as_str();
                let page = page.max(1);
                let mut after = String::new();
                loop {
                    let members =
                        member_page::<DB>(&mut tx, tenant, conversation, None, &after, page)
                            .await?;
                    let rows = change_rows(&members, kinds, &chat, payload_for);
                    insert_rows::<DB>(&mut tx, tenant, &rows, Some(update_id)).await?;
                    match members.last() {
                        Some(last) if members.len() == page => after = last.clone(),
                        _ => break,
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(Some(chat))
    }

    async fn record_chat(
        &self,
        tenant: &TenantId,
        chat: &NewChat<'_>,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.writer.begin().await?;
        let recorded = record_on::<DB>(&mut tx, tenant, chat).await?;
        if let Recorded::Stored(_) = recorded {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(recorded)
    }

    async fn record_chats(
        &self,
        chats: &[(&TenantId, NewChat<'_>)],
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        let mut order: Vec<usize> = (0..chats.len()).collect();
        order.sort_by_key(|&i| (chats[i].0.as_str(), chats[i].1.conversation_id));
        let mut outcomes: Vec<Option<Result<Recorded, StoreError>>> =
            (0..chats.len()).map(|_| None).collect();
        let mut tx = self.writer.begin().await?;
        for i in order {
            let (tenant, chat) = &chats[i];
            sqlx::query("SAVEPOINT chat").execute(&mut *tx).await?;
            let recorded = record_on::<DB>(&mut tx, tenant, chat).await;
            if !matches!(recorded, Ok(Recorded::Stored(_))) {
                sqlx::query("ROLLBACK TO SAVEPOINT chat")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("RELEASE SAVEPOINT chat")
                .execute(&mut *tx)
                .await?;
            outcomes[i] = Some(recorded);
        }
        tx.commit().await?;
        Ok(outcomes.into_iter().flatten().collect())
    }
}
