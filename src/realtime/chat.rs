//! The chat worker: stores each message once (idempotent on `messageId`), numbered in its
//! conversation, appends `message:new` to every recipient's log in the same transaction,
//! then pokes the recipients' connections.
//!
//! The recipients are those the message names, or else its conversation's members but
//! the sender, read a page at a time (`realtime.member_page`) both when appending and when
//! poking, so that a conversation of 10,000 members is never held in memory at once. A
//! message with no one to go to (an unknown or empty conversation) is rejected, with the
//! reason in the ledger, and nothing is stored.
//!
//! The pool's handlers hand their messages to one recorder task, which records whatever
//! has piled up in one transaction (group commit): on SQLite, where every write goes
//! through one connection and each commit is an fsync, a commit per message is what held
//! chat at a few hundred messages a second; a group of up to [`GROUP`] shares one. A
//! handler waits for its message's commit, so a message is stored before the broker hears
//! it was delivered, as before.

use super::Realtime;
use crate::domain::{ChatMessage, Envelope, Event, TenantId};
use crate::grouped::{GroupWrite, Grouped};
use crate::store::{Audience, ChatStore, NewChat, Recorded};
use crate::workers::{Handler, Outcome};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;

/// Most messages one transaction records: above the chat pool's default concurrency (32),
/// so that a group holds every message the pool has under way.
const GROUP: usize = 64;

/// A message for the recorder, owned.
struct ToRecord {
    tenant: TenantId,
    message_id: String,
    conversation_id: String,
    sender_id: String,
    /// The recipients the message names; `None`: the conversation's members.
    listed: Option<Vec<String>>,
    payload: Value,
}

impl ToRecord {
    /// The message as the store takes it, its members read `page` at a time.
    fn chat(&self, page: usize) -> NewChat<'_> {
        NewChat {
            message_id: &self.message_id,
            conversation_id: &self.conversation_id,
            sender_id: &self.sender_id,
            audience: match &self.listed {
                Some(users) => Audience::Listed(users.iter().map(String::as_str).collect()),
                None => Audience::Members { page },
            },
            payload: self.payload.clone(),
        }
    }
}

/// Records a group of messages in one transaction.
struct Recorder {
    store: Arc<dyn ChatStore>,
    /// Members read per page.
    page: usize,
}

impl GroupWrite for Recorder {
    type Item = ToRecord;
    type Outcome = Recorded;

    async fn write(&mut self, group: &[ToRecord]) -> Result<Vec<Result<Recorded, String>>, String> {
        let chats: Vec<(&TenantId, NewChat<'_>)> = group
            .iter()
            .map(|m| (&m.tenant, m.chat(self.page)))
            .collect();
        let outcomes = self.store.record_chats(&chats).await;
        let outcomes = outcomes.map_err(|e| e.to_string())?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.map_err(|e| e.to_string()))
            .collect())
    }
}

/// The chat queue's handler.
pub struct ChatHandler {
    realtime: Arc<Realtime>,
    recorder: Grouped<Recorder>,
}

impl ChatHandler {
    /// A handler delivering through `realtime`, with a recorder task of its own.
    pub fn new(realtime: Arc<Realtime>) -> Self {
        let recorder = Recorder {
            store: realtime.chats().clone(),
            page: realtime.settings().member_page.get(),
        };
        ChatHandler {
            realtime,
            recorder: Grouped::start(recorder, GROUP, GROUP),
        }
    }

    async fn deliver(&self, message: &ChatMessage) -> Outcome {
        let listed: Option<Vec<&str>> = message
            .listed_recipients()
            .map(|ids| ids.into_iter().map(|u| u.as_str()).collect());
        let mut payload = json!({
            "messageId": message.message_id.as_str(),
            "conversationId": message.conversation_id.as_str(),
            "conversationType": message.conversation_type.as_str(),
            "senderId": message.sender_id.as_str(),
            "content": message.content,
            "messageType": message.message_type.as_str(),
            "timestamp": message.timestamp,
        });
        // A message to the members does not list them: each of thousands of copies
        // would carry thousands of ids.
        if let Some(listed) = &listed {
            payload["recipientIds"] = json!(listed);
        }
        let tenant = &message.tenant_id;
        let to_record = ToRecord {
            tenant: tenant.clone(),
            message_id: message.message_id.as_str().to_owned(),
            conversation_id: message.conversation_id.as_str().to_owned(),
            sender_id: message.sender_id.as_str().to_owned(),
            listed: listed
                .as_ref()
                .map(|users| users.iter().map(|u| (*u).to_owned()).collect()),
            payload,
        };
        match self.recorder.write(to_record).await {
            Err(e) => return Outcome::retry(format!("storing the message: {e}")),
            Ok(Recorded::NoAudience) => {
                return Outcome::Rejected {
                    reason: match listed {
                        Some(_) => "the message names no recipient but its sender".to_owned(),
                        None => format!(
                            "conversation {} is unknown or has no member but the sender: \
                             define it with PUT /v1/conversations/{{conversationId}}, or \
                             name the recipients in recipientIds",
                            message.conversation_id
                        ),
                    },
                };
            }
            Ok(Recorded::Stored(_) | Recorded::Before) => {}
        }
        // Also after a redelivery: the first attempt may have stopped before poking.
        let conversation = message.conversation_id.as_str();
        self.realtime
            .poke_audience(
                tenant,
                listed.as_deref(),
                conversation,
                message.sender_id.as_str(),
            )
            .await;
        Outcome::Delivered
    }
}

#[async_trait]
impl Handler for ChatHandler {
    async fn handle(&self, envelope: &Envelope, _attempt: u32) -> Outcome {
        match &envelope.event {
            Event::Chat(message) => self.deliver(message).await,
            other => Outcome::failed(format!("not a chat message: {:?}", other.kind())),
        }
    }

    /// A conversation's messages are numbered in the order they were queued (on one
    /// worker instance; several instances number them in the order they store them).
    fn order_key(&self, envelope: &Envelope) -> Option<String> {
        match &envelope.event {
            Event::Chat(message) => Some(format!(
                "{}\u{0}{}",
                message.tenant_id,
                message.conversation_id.as_str()
            )),
            _ => None,
        }
    }
}
