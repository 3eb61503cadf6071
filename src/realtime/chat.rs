//! The chat worker: stores each message once (idempotent on `messageId`), numbered in its
//! conversation, appends `message:new` to every recipient's log in the same transaction,
//! then pokes the recipients' connections.

use super::Realtime;
use crate::domain::{ChatMessage, Envelope, Event};
use crate::store::NewChat;
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
        let recipients: Vec<&str> = message
            .recipient_ids
            .as_slice()
            .iter()
            .map(|u| u.as_str())
            .collect();
        let payload = json!({
            "messageId": message.message_id.as_str(),
            "conversationId": message.conversation_id.as_str(),
            "conversationType": message.conversation_type.as_str(),
            "senderId": message.sender_id.as_str(),
            "recipientIds": recipients,
            "content": message.content,
            "messageType": message.message_type.as_str(),
            "timestamp": message.timestamp,
        });
        let chat = NewChat {
            message_id: message.message_id.as_str(),
            conversation_id: message.conversation_id.as_str(),
            sender_id: message.sender_id.as_str(),
            recipients: recipients.clone(),
            payload,
        };
        let store = self.realtime.chats();
        if let Err(e) = store.record_chat(&message.tenant_id, &chat).await {
            return Outcome::retry(format!("storing the message: {e}"));
        }
        // Also after a redelivery: the first attempt may have stopped before poking.
        self.realtime.poke(&message.tenant_id, &recipients).await;
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
