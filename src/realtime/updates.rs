//! The updates worker: appends each update to its users' logs, then pokes their
//! connections. An update is either seed 004's, for one user, or a change (edit, deletion,
//! reaction) to one of Herald's own chat messages, for everyone the message went to.
//!
//! Clients hear an update under two names: `chat3:update` for every update, and
//! `message:update` or `dialog:update` by its type's family, each carrying seed 004's Update
//! structure. The log holds two rows for it, one per name, appended together in one
//! transaction: every transport replays a log row as one event, so a transport needs no
//! knowledge of updates, and a client that acknowledged the first row resumes at the
//! second. The rows are keyed by the update's id, so that a redelivered update (or one
//! published twice under the same `_id`) appends nothing.

use super::Realtime;
use crate::domain::{Envelope, Event, MessageChange, UpdateFamily, UserUpdate};
use crate::store::{Sent, StoredChat};
use crate::workers::{Handler, Outcome};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The event every update is sent as.
pub const CHAT3_UPDATE: &str = "chat3:update";

/// The updates queue's handler.
pub struct UpdateHandler {
    realtime: Arc<Realtime>,
}

/// What an Update says, besides what its envelope gives.
struct Parts<'a> {
    tenant: &'a str,
    user: &'a str,
    dialog: Option<&'a str>,
    entity: Option<&'a str>,
    event_id: Option<&'a str>,
    event_type: &'a str,
    data: &'a Map<String, Value>,
}

/// Seed 004's Update structure: `_id` is Herald's id for the update (what
/// `GET /v1/notifications/{id}` answers), `eventId` the publisher's own, or the `_id` when
/// it gave none.
fn update_document(envelope: &Envelope, parts: &Parts<'_>, published_at: &str) -> Value {
    let id = envelope.id.to_string();
    json!({
        "_id": id,
        "tenantId": parts.tenant,
        "userId": parts.user,
        "dialogId": parts.dialog,
        "entityId": parts.entity,
        "eventId": parts.event_id.unwrap_or(id.as_str()),
        "eventType": parts.event_type,
        "data": parts.data,
        "published": true,
        "publishedAt": published_at,
        "createdAt": millis(envelope.created_at),
    })
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl UpdateHandler {
    /// A handler delivering through `realtime`.
    pub fn new(realtime: Arc<Realtime>) -> Self {
        UpdateHandler { realtime }
    }

    async fn deliver(&self, envelope: &Envelope, update: &UserUpdate) -> Outcome {
        let user = update.user_id.as_str();
        let parts = Parts {
            tenant: update.tenant_id.as_str(),
            user,
            dialog: update.dialog_id.as_ref().map(|d| d.as_str()),
            entity: update.entity_id.as_ref().map(|e| e.as_str()),
            event_id: update.event_id.as_ref().map(|e| e.as_str()),
            event_type: update.event_type.as_str(),
            data: update.data.as_map(),
        };
        let payload = update_document(envelope, &parts, &millis(Utc::now())).to_string();
        let events = [
            (user, CHAT3_UPDATE, payload.clone()),
            (user, update.event_type.family().event_name(), payload),
        ];
        let tenant = &update.tenant_id;
        let id = envelope.id.to_string();
        if let Err(e) = self
            .realtime
            .log()
            .append_update(tenant, &id, &events)
            .await
        {
            return Outcome::retry(format!("appending the update to the user's log: {e}"));
        }
        // Also after a redelivery: the first attempt may have stopped before poking.
        self.realtime.poke(tenant, &[user]).await;
        Outcome::Delivered
    }

    async fn deliver_change(&self, envelope: &Envelope, change: &MessageChange) -> Outcome {
        let tenant = &change.tenant_id;
        let message = change.message_id.as_str();
        let published_at = millis(Utc::now());
        let payload_for = |user: &str, chat: &StoredChat| {
            let parts = Parts {
                tenant: tenant.as_str(),
                user,
                dialog: Some(chat.conversation_id.as_str()),
                entity: Some(message),
                event_id: None,
                event_type: change.event_type.as_str(),
                data: change.data.as_map(),
            };
            update_document(envelope, &parts, &published_at).to_string()
        };
        let kinds = [CHAT3_UPDATE, UpdateFamily::Message.event_name()];
        let page = self.realtime.settings().member_page.get();
        let id = envelope.id.to_string();
        let recorded = self
            .realtime
            .chats()
            .record_message_change(tenant, message, &id, &kinds, page, &payload_for)
            .await;
        match recorded {
            Err(e) => Outcome::retry(format!("appending the change to the logs: {e}")),
            // Checked when it was sent: the message was removed since (by retention).
            Ok(None) => Outcome::Rejected {
                reason: format!("message {message} is not stored"),
            },
            Ok(Some(chat)) => {
                let listed: Option<Vec<&str>> = match &chat.sent {
                    Sent::Listed(users) => Some(users.iter().map(String::as_str).collect()),
                    Sent::Members => None,
                };
                // The sender is a member: its other devices hear of the change too.
                let conversation = &chat.conversation_id;
                self.realtime
                    .poke_audience(tenant, listed.as_deref(), conversation, "")
                    .await;
                Outcome::Delivered
            }
        }
    }
}

#[async_trait]
impl Handler for UpdateHandler {
    async fn handle(&self, envelope: &Envelope, _attempt: u32) -> Outcome {
        match &envelope.event {
            Event::Update(update) => self.deliver(envelope, update).await,
            Event::MessageChange(change) => self.deliver_change(envelope, change).await,
            other => Outcome::failed(format!("not an update: {:?}", other.kind())),
        }
    }

    /// A user's updates, and a message's changes, reach the logs in the order they were
    /// queued (on one worker instance), so that an edit is not replayed before the one
    /// it follows.
    fn order_key(&self, envelope: &Envelope) -> Option<String> {
        match &envelope.event {
            Event::Update(update) => Some(format!("{}\u{0}{}", update.tenant_id, update.user_id)),
            Event::MessageChange(change) => Some(format!(
                "{}\u{0}message\u{0}{}",
                change.tenant_id, change.message_id
            )),
            _ => None,
        }
    }
}
