//! Real time: chat messages and in-app events to connected users over WebSocket, across
//! instances, with replay for users who were offline.
//!
//! Every event for a user is first appended to the user's log in the store (kept
//! `retention.realtime`); the instances holding that user's connections are then poked
//! over a bus (RabbitMQ: an exclusive queue per instance bound per connected user; the
//! embedded broker: in process). A poked connection reads the log from its cursor, so a
//! client gets each event once and in order, and one that reconnects with its cursor (or
//! that acknowledged one) first gets exactly what it missed.
//!
//! It starts from its [`RealtimeSettings`], made by the configuration, and the [`Bus`] the
//! broker calls for, made by the wiring once the broker is open.

mod amqp_bus;
pub mod chat;
mod hub;
pub mod session;
pub mod socket;
pub mod socket_io;
pub mod sse;
mod tokens;
pub mod updates;

pub use hub::{Hub, LocalBus, UserBus, presence_key, user_key};
pub use session::ChatSends;
pub use tokens::{TokenError, TokenKey};

use crate::broker::amqp::AmqpBroker;
use crate::channels::push::InAppInbox;
use crate::domain::TenantId;
use crate::store::{
    ChatStore, ConversationRead, ConversationStore, EventLogStore, InboxStore, Presence,
    PresenceStore, ReadReceipt, ReadReceiptStore, StoreError, Stores,
};
use chrono::{DateTime, Utc};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Real-time delivery over WebSocket, as configured (`realtime.*`).
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// The lifetime of a token when the request names none.
    pub token_ttl: Duration,
    /// The longest lifetime a token may be given.
    pub token_ttl_max: Duration,
    /// How often a connection is pinged (never zero); one silent for three of these is
    /// closed.
    pub heartbeat: Duration,
    /// How long a client may take to accept a frame (never zero) before it is
    /// disconnected (to catch up by replay when it reconnects).
    pub send_timeout: Duration,
    /// Members read, and appended to, per page when a chat message goes to its
    /// conversation's members: what bounds the memory of a fan-out.
    pub member_page: std::num::NonZeroUsize,
}

/// What instances tell each other about users' news over.
#[derive(Clone)]
pub enum Bus {
    /// Nothing: one process holds every connection (the embedded broker).
    InProcess,
    /// A RabbitMQ topic exchange, over the broker's own connection.
    Rabbitmq {
        /// The broker, whose connection the bus rides on.
        broker: AmqpBroker,
        /// The exchange, with the broker's prefix.
        exchange: String,
    },
}

/// Real-time delivery in this process.
pub struct Realtime {
    /// The connections held here.
    pub hub: Arc<Hub>,
    /// This process's name in the presence table.
    instance: String,
    /// Where chat messages are numbered and stored.
    chats: Arc<dyn ChatStore>,
    /// Conversations' members and read positions.
    conversations: Arc<dyn ConversationStore>,
    /// Users' logs, which connections replay.
    log: Arc<dyn EventLogStore>,
    /// Users' inboxes, which in-app notifications join.
    inbox: Arc<dyn InboxStore>,
    /// Connection counts, and the token key.
    presence: Arc<dyn PresenceStore>,
    /// Who read which message.
    reads: Arc<dyn ReadReceiptStore>,
    key: TokenKey,
    settings: RealtimeSettings,
    /// Where clients' `message:send` goes: set once the ingress exists.
    chat_sends: OnceLock<Arc<dyn ChatSends>>,
}

/// Why real time could not start.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    /// The token key could not be read or made.
    #[error("the real-time token key: {0}")]
    Store(#[from] StoreError),
}

impl Realtime {
    /// Reads (or makes) the token key and connects `bus`; keeps the six of `stores` it
    /// uses (chat, conversations, event logs, inboxes, presence, read receipts).
    pub async fn start(
        settings: &RealtimeSettings,
        bus: &Bus,
        stores: &Stores,
    ) -> Result<Arc<Realtime>, RealtimeError> {
        let mut candidate = [0u8; 32];
        getrandom::fill(&mut candidate).expect("the system has randomness");
        let key = TokenKey::new(&stores.presence.realtime_key(&candidate).await?);
        let hub = Hub::new();
        let bus: Arc<dyn UserBus> = match bus {
            Bus::InProcess => Arc::new(LocalBus::new(&hub)),
            Bus::Rabbitmq { broker, exchange } => {
                amqp_bus::AmqpBus::start(broker.clone(), exchange, &hub).await
            }
        };
        hub.set_bus(bus);
        let realtime = Arc::new(Realtime {
            hub,
            instance: uuid::Uuid::now_v7().to_string(),
            chats: stores.chat.clone(),
            conversations: stores.conversations.clone(),
            log: stores.events.clone(),
            inbox: stores.inbox.clone(),
            presence: stores.presence.clone(),
            reads: stores.reads.clone(),
            key,
            settings: settings.clone(),
            chat_sends: OnceLock::new(),
        });
        // Connections of an instance that stops touching them (it crashed) count as gone
        // after three heartbeats.
        let alive = Arc::downgrade(&realtime);
        let every = settings.heartbeat;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while let Some(realtime) = {
                tick.tick().await;
                alive.upgrade()
            } {
                if let Err(e) = realtime.presence.touch_presence(&realtime.instance).await {
                    tracing::warn!(error = %e, "touching presence failed");
                }
            }
        });
        Ok(realtime)
    }

    /// Counts a connection of `user` in (`delta` 1) or out (-1), and tells those watching
    /// the user's presence when it came online or went offline.
    pub async fn count_connection(&self, tenant: &TenantId, user: &str, delta: i64) {
        match self
            .presence
            .count_connection(tenant, user, &self.instance, delta)
            .await
        {
            Ok(total) if (delta > 0 && total == 1) || (delta < 0 && total == 0) => {
                self.hub.poke(&presence_key(tenant.as_str(), user)).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "counting a connection for presence failed"),
        }
    }

    /// Records that `reader` read a message, and tells the sender.
    pub async fn read(
        &self,
        tenant: &TenantId,
        message_id: &str,
        reader: &str,
    ) -> Result<ReadReceipt, StoreError> {
        let receipt = self.reads.record_read(tenant, message_id, reader).await?;
        if let ReadReceipt::Recorded { sender } = &receipt {
            self.poke(tenant, &[sender]).await;
        }
        Ok(receipt)
    }

    /// Moves `reader`'s read position in a conversation (see
    /// [`ConversationStore::mark_conversation_read`]), and tells the senders it covers.
    pub async fn read_conversation(
        &self,
        tenant: &TenantId,
        conversation: &str,
        reader: &str,
        up_to: Option<&str>,
    ) -> Result<ConversationRead, StoreError> {
        let read = self
            .conversations
            .mark_conversation_read(tenant, conversation, reader, up_to)
            .await?;
        if let ConversationRead::Marked { senders, .. } = &read {
            let senders: Vec<&str> = senders.iter().map(String::as_str).collect();
            self.poke(tenant, &senders).await;
        }
        Ok(read)
    }

    /// Sends clients' chat messages (`message:send`) through `sends` from now on; the
    /// wiring calls it once, when the ingress exists (a second call changes nothing).
    pub fn send_chats_through(&self, sends: Arc<dyn ChatSends>) {
        let _ = self.chat_sends.set(sends);
    }

    /// Where clients' chat messages go, once there is somewhere.
    pub fn chat_sends(&self) -> Option<Arc<dyn ChatSends>> {
        self.chat_sends.get().cloned()
    }

    /// Whether `user` is a member of the conversation.
    pub async fn is_member(
        &self,
        tenant: &TenantId,
        conversation: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        self.conversations
            .is_member(tenant, conversation, user)
            .await
    }

    /// Pokes a conversation's members but `except`, a page at a time.
    pub async fn poke_members(
        &self,
        tenant: &TenantId,
        conversation: &str,
        except: &str,
    ) -> Result<(), StoreError> {
        let page = self.settings.member_page.get();
        let mut after = String::new();
        loop {
            let members = self
                .conversations
                .members_after(tenant, conversation, Some(except), &after, page)
                .await?;
            let users: Vec<&str> = members.iter().map(String::as_str).collect();
            self.poke(tenant, &users).await;
            match members.last() {
                Some(last) if members.len() == page => after = last.clone(),
                _ => return Ok(()),
            }
        }
    }

    /// Hands `signal` (an ephemeral frame, `{"type", "data"}`) to the connections of a
    /// conversation's members but `except`, wherever they are (members connected nowhere
    /// never see it), if they are at most `most`; answers whether it went out.
    pub async fn signal_members(
        &self,
        tenant: &TenantId,
        conversation: &str,
        except: &str,
        signal: &str,
        most: usize,
    ) -> Result<bool, StoreError> {
        let members = self
            .conversations
            .members_after(tenant, conversation, Some(except), "", most + 1)
            .await?;
        if members.len() > most {
            return Ok(false);
        }
        for user in &members {
            let key = user_key(tenant.as_str(), user);
            self.hub.signal(&key, signal).await;
        }
        Ok(true)
    }

    /// Pokes the `listed` users, or else `conversation`'s members but `except` (a page at
    /// a time). Their events are stored before: a failure to read the members is only
    /// logged, since connections that miss a poke catch up on their next one, or on
    /// reconnecting.
    pub async fn poke_audience(
        &self,
        tenant: &TenantId,
        listed: Option<&[&str]>,
        conversation: &str,
        except: &str,
    ) {
        match listed {
            Some(users) => self.poke(tenant, users).await,
            None => {
                if let Err(e) = self.poke_members(tenant, conversation, except).await {
                    tracing::warn!(error = %e, conversation, "poking the members failed");
                }
            }
        }
    }

    /// Where `users` are now.
    pub async fn presence(
        &self,
        tenant: &TenantId,
        users: &[&str],
    ) -> Result<Vec<Presence>, StoreError> {
        let alive_since = Utc::now()
            - chrono::Duration::from_std(self.settings.heartbeat * 3)
                .unwrap_or(chrono::Duration::minutes(1));
        self.presence.presence(tenant, users, alive_since).await
    }

    /// Its settings.
    pub fn settings(&self) -> &RealtimeSettings {
        &self.settings
    }

    /// Where chat messages are stored.
    pub fn chats(&self) -> &Arc<dyn ChatStore> {
        &self.chats
    }

    /// Where users' logs live, which connections replay and acknowledge.
    pub fn log(&self) -> &Arc<dyn EventLogStore> {
        &self.log
    }

    /// A token opening a socket for `user` of `tenant` until `expires`.
    pub fn issue(&self, tenant: &TenantId, user: &str, expires: DateTime<Utc>) -> String {
        self.key.issue(tenant, user, expires)
    }

    /// The tenant and user of a genuine, current token.
    pub fn check(&self, token: &str) -> Result<(TenantId, String), TokenError> {
        self.key.check(token)
    }

    /// Tells `users`' connections, wherever they are, that their logs have news.
    pub async fn poke(&self, tenant: &TenantId, users: &[&str]) {
        for user in users {
            self.hub.poke(&user_key(tenant.as_str(), user)).await;
        }
    }
}

#[async_trait::async_trait]
impl InAppInbox for Realtime {
    async fn deliver(
        &self,
        tenant: &TenantId,
        users: &[&str],
        id: &str,
        item: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.inbox
            .add_to_inboxes(tenant, users, id, &item.to_string())
            .await?;
        self.poke(tenant, users).await;
        Ok(())
    }
}
