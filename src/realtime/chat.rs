//! The chat worker: stores each message once (idempotent on `messageId`), numbered in its
//! conversation, appends `message:new` to every recipient's log in the same transaction,
//! then pokes the recipients' connections.
//!
//! The recipients are those the message names, or else its conversation's members but
//! the sender, read a page at a time (`realtime.member_page`) both when appending and when
//! poking, so that a conversation of 10,000 members is never held in memory at once. A
//! message with no one to go to (an unknown or empty conversation) is rejected, with the
//! reason in the ledger, and nothing is stored.

use super::Realtime;
use crate::domain::{ChatMessage, Envelope, Event};
use crate::store::{Audience, NewChat, Recorded};
use crate::workers::{Handler, Outcome};
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;

/// The chat queue's handler.
pub struct ChatHandler {
    realtime: Arc<Realtime>,
}

impl ChatHandler {
    /// A handler delivering through `realtime`.
    pub fn new(realtime: Arc<Realtime>) -> Self {
        ChatHandler { realtime }
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
        let audience = match &listed {
            Some(listed) => Audience::Listed(listed.clone()),
            None => Audience::Members {
                page: self.realtime.settings().member_page.get(),
            },
        };
        let chat = NewChat {
            message_id: message.message_id.as_str(),
            conversation_id: message.conversation_id.as_str(),
            sender_id: message.sender_id.as_str(),
            audience,
            payload,
        };
        let tenant = &message.tenant_id;
        match self.realtime.chats().record_chat(tenant, &chat).await {
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
