//! Conversations defined through the API: their type, their members (read a page at a
//! time, never all at once, however many there are) and how far each member has read.
//!
//! The `conversations` row is the one chat messages number their conversation with
//! ([`super::chat`]); the API gives it a type, which is what makes it known here.

use super::StoreError;
use super::events::insert_events;
use super::sql::{Column, Dialect, Param, SqlStore, now};
use crate::domain::{ConversationType, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Executor, IntoArguments, Pool, QueryBuilder};

/// A conversation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Direct or group.
    pub conversation_type: ConversationType,
    /// How many members it has.
    pub member_count: i64,
}

/// What marking a conversation read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationRead {
    /// The tenant has no such conversation.
    UnknownConversation,
    /// The reader is not one of its members.
    NotAMember,
    /// `upTo` names no message of this conversation.
    UnknownMessage,
    /// The read position moved to `sequence`; `senders` (each with the last of their
    /// messages it covers) got `message:read` in their logs.
    Marked {
        /// The new read position.
        sequence: i64,
        /// Who was told, to be poked.
        senders: Vec<String>,
    },
    /// The reader had read that far already: the position stays at `sequence`.
    AlreadyRead {
        /// The read position.
        sequence: i64,
    },
}

/// The last message of one sender that a read covers.
#[derive(sqlx::FromRow)]
struct CoveredMessage {
    sender_id: String,
    message_id: String,
    sequence: i64,
}

/// Rows per multi-row insert or `IN` list of members.
const MEMBERS_PER_STATEMENT: usize = 1000;

/// Where conversations and their members live.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Creates the conversation, or replaces its type and members; answers whether it was
    /// created (unknown to the API before).
    async fn put_conversation(
        &self,
        tenant: &TenantId,
        conversation: &str,
        conversation_type: ConversationType,
        members: &[&str],
    ) -> Result<bool, StoreError>;

    /// The conversation, if the API defined it.
    async fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &str,
    ) -> Result<Option<Conversation>, StoreError>;

    /// Adds members (those already in stay as they are).
    async fn add_members(
        &self,
        tenant: &TenantId,
        conversation: &str,
        members: &[&str],
    ) -> Result<(), StoreError>;

    /// Removes members (those not in are ignored).
    async fn remove_members(
        &self,
        tenant: &TenantId,
        conversation: &str,
        members: &[&str],
    ) -> Result<(), StoreError>;

    /// Up to `limit` members after `after` ("" for the first page), by user id, leaving
    /// out `except` (a message's sender, say) if given.
    async fn members_after(
        &self,
        tenant: &TenantId,
        conversation: &str,
        except: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Whether `user` is a member of the conversation.
    async fn is_member(
        &self,
        tenant: &TenantId,
        conversation: &str,
        user: &str,
    ) -> Result<bool, StoreError>;

    /// Moves `reader`'s read position to the message `up_to` (the conversation's last
    /// message if `None`), and appends `message:read` to the log of each sender of a
    /// message it newly covers.
    async fn mark_conversation_read(
        &self,
        tenant: &TenantId,
        conversation: &str,
        reader: &str,
        up_to: Option<&str>,
    ) -> Result<ConversationRead, StoreError>;
}

/// One page of a conversation's members on `connection`, which may be inside its caller's
/// transaction (the chat fan-out reads its pages there, so that the members it appends to
/// are those of one moment).
pub(super) async fn member_page<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
    conversation: &str,
    except: Option<&str>,
    after: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
{
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT user_id FROM conversation_members \
         WHERE tenant_id = $1 AND conversation_id = $2 AND user_id > $3 AND user_id <> $4 \
         ORDER BY user_id LIMIT $5",
    )
    .bind(tenant.as_str())
    .bind(conversation)
    .bind(after)
    // No user id is empty, so "" leaves no one out.
    .bind(except.unwrap_or(""))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows.into_iter().map(|(user,)| user).collect())
}

/// Whether `user` is a member of the conversation.
pub(super) async fn is_member<DB>(
    pool: &Pool<DB>,
    tenant: &TenantId,
    conversation: &str,
    user: &str,
) -> Result<bool, StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
{
    let member: Option<(String,)> = sqlx::query_as(
        "SELECT user_id FROM conversation_members \
         WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3",
    )
    .bind(tenant.as_str())
    .bind(conversation)
    .bind(user)
    .fetch_optional(pool)
    .await?;
    Ok(member.is_some())
}

/// Inserts members on `connection`, inside its caller's transaction.
async fn insert_members<DB>(
    connection: &mut DB::Connection,
    tenant: &TenantId,
    conversation: &str,
    members: &[&str],
) -> Result<(), StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB>,
{
    for chunk in members.chunks(MEMBERS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO conversation_members (tenant_id, conversation_id, user_id) ",
        );
        insert.push_values(chunk, |mut row, user| {
            row.push_bind(tenant.as_str())
                .push_bind(conversation)
                .push_bind(*user);
        });
        insert.push(" ON CONFLICT (tenant_id, conversation_id, user_id) DO NOTHING");
        insert.build().execute(&mut *connection).await?;
    }
    Ok(())
}

#[async_trait]
impl<DB> ConversationStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Param<'a, DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn put_conversation(
        &self,
        tenant: &TenantId,
        conversation: &str,
        conversation_type: ConversationType,
        members: &[&str],
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        // Writes first (SQLite cannot turn a read into a write against a concurrent
        // commit): a conversation the API defined before is replaced...
        let replaced = sqlx::query(
            "UPDATE conversations SET conversation_type = $3 \
             WHERE tenant_id = $1 AND conversation_id = $2 AND conversation_type IS NOT NULL",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .bind(conversation_type.as_str())
        .execute(&mut *tx)
        .await?;
        let created = DB::rows_affected(replaced) == 0;
        if created {
            // ... else it is created, keeping the numbering of any messages sent to it
            // with their recipientIds before.
            sqlx::query(
                "INSERT INTO conversations (tenant_id, conversation_id, last_sequence, \
                 conversation_type) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT (tenant_id, conversation_id) \
                 DO UPDATE SET conversation_type = excluded.conversation_type",
            )
            .bind(tenant.as_str())
            .bind(conversation)
            .bind(conversation_type.as_str())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM conversation_members WHERE tenant_id = $1 AND conversation_id = $2",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .execute(&mut *tx)
        .await?;
        insert_members::<DB>(&mut tx, tenant, conversation, members).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn conversation(
        &self,
        tenant: &TenantId,
        conversation: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT conversation_type FROM conversations \
             WHERE tenant_id = $1 AND conversation_id = $2",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .fetch_optional(&self.pool)
        .await?;
        let Some(conversation_type) = row.and_then(|(t,)| t) else {
            return Ok(None);
        };
        let conversation_type = ConversationType::parse(&conversation_type)
            .ok_or_else(|| StoreError::Corrupt(format!("conversation type {conversation_type}")))?;
        let (member_count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM conversation_members \
             WHERE tenant_id = $1 AND conversation_id = $2",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(Conversation {
            conversation_type,
            member_count,
        }))
    }

    async fn add_members(
        &self,
        tenant: &TenantId,
        conversation: &str,
        members: &[&str],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        insert_members::<DB>(&mut tx, tenant, conversation, members).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_members(
        &self,
        tenant: &TenantId,
        conversation: &str,
        members: &[&str],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in members.chunks(MEMBERS_PER_STATEMENT) {
            let mut delete =
                QueryBuilder::<DB>::new("DELETE FROM conversation_members WHERE tenant_id = ");
            delete
                .push_bind(tenant.as_str())
                .push(" AND conversation_id = ")
                .push_bind(conversation)
                .push(" AND user_id IN (");
            let mut users = delete.separated(", ");
            for user in chunk {
                users.push_bind(*user);
            }
            delete.push(")");
            delete.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn members_after(
        &self,
        tenant: &TenantId,
        conversation: &str,
        except: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        member_page::<DB>(&mut connection, tenant, conversation, except, after, limit).await
    }

    async fn is_member(
        &self,
        tenant: &TenantId,
        conversation: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        is_member(&self.pool, tenant, conversation, user).await
    }

    async fn mark_conversation_read(
        &self,
        tenant: &TenantId,
        conversation: &str,
        reader: &str,
        up_to: Option<&str>,
    ) -> Result<ConversationRead, StoreError> {
        // What is read before the transaction never goes back (a conversation's last
        // number only grows, a stored message never changes), and the transaction starts
        // with its write, as SQLite needs.
        let known: Option<(Option<String>, i64)> = sqlx::query_as(
            "SELECT conversation_type, last_sequence FROM conversations \
             WHERE tenant_id = $1 AND conversation_id = $2",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .fetch_optional(&self.pool)
        .await?;
        let Some((Some(_), last_sequence)) = known else {
            return Ok(ConversationRead::UnknownConversation);
        };
        if !is_member(&self.pool, tenant, conversation, reader).await? {
            return Ok(ConversationRead::NotAMember);
        }
        let target = match up_to {
            None => last_sequence,
            Some(message) => {
                let found: Option<(i64,)> = sqlx::query_as(
                    "SELECT sequence FROM chat_messages \
                     WHERE tenant_id = $1 AND message_id = $2 AND conversation_id = $3",
                )
                .bind(tenant.as_str())
                .bind(message)
                .bind(conversation)
                .fetch_optional(&self.pool)
                .await?;
                match found {
                    Some((sequence,)) => sequence,
                    None => return Ok(ConversationRead::UnknownMessage),
                }
            }
        };
        let previous: Option<(i64,)> = sqlx::query_as(
            "SELECT read_sequence FROM conversation_reads \
             WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .bind(reader)
        .fetch_optional(&self.pool)
        .await?;
        let previous = previous.map_or(0, |(sequence,)| sequence);
        if target <= previous {
            return Ok(ConversationRead::AlreadyRead { sequence: previous });
        }
        let read_at = now();
        let mut tx = self.writer.begin().await?;
        // Moved only from where it was read: a concurrent mark that moved it first wins,
        // so that no message's read is told twice.
        let moved = sqlx::query(
            "INSERT INTO conversation_reads \
             (tenant_id, conversation_id, user_id, read_sequence, read_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, conversation_id, user_id) DO UPDATE \
             SET read_sequence = excluded.read_sequence, read_at = excluded.read_at \
             WHERE conversation_reads.read_sequence = $6",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .bind(reader)
        .bind(target)
        .bind(read_at)
        .bind(previous)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(moved) == 0 {
            tx.rollback().await?;
            return Ok(ConversationRead::AlreadyRead { sequence: previous });
        }
        // One receipt per sender, for the last of their messages the read covers: it
        // tells them every earlier one was read too.
        let covered: Vec<CoveredMessage> = sqlx::query_as(
            "SELECT m.sender_id, m.message_id, m.sequence FROM chat_messages m \
             WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.sender_id <> $3 \
             AND m.sequence = (SELECT MAX(n.sequence) FROM chat_messages n \
                 WHERE n.tenant_id = m.tenant_id AND n.conversation_id = m.conversation_id \
                 AND n.sender_id = m.sender_id AND n.sequence > $4 AND n.sequence <= $5)",
        )
        .bind(tenant.as_str())
        .bind(conversation)
        .bind(reader)
        .bind(previous)
        .bind(target)
        .fetch_all(&mut *tx)
        .await?;
        let events: Vec<(&str, &str, String)> = covered
            .iter()
            .map(|message| {
                let event = serde_json::json!({
                    "messageId": message.message_id, "conversationId": conversation,
                    "userId": reader, "readAt": read_at, "sequence": message.sequence,
                    "upToSequence": target,
                });
                (
                    message.sender_id.as_str(),
                    "message:read",
                    event.to_string(),
                )
            })
            .collect();
        insert_events::<DB>(&mut tx, tenant, &events).await?;
        tx.commit().await?;
        Ok(ConversationRead::Marked {
            sequence: target,
            senders: covered.into_iter().map(|m| m.sender_id).collect(),
        })
    }
}
