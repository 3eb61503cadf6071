//! The bus across instances on RabbitMQ: each instance declares an exclusive queue of its
//! own and binds it to the `realtime` topic exchange with the key of every user connected
//! to it (`user.{tenantId}.{userId}`), so that it receives only its own users' pokes.
//!
//! The bus rides on the broker's connection (one TCP connection per instance, watched by
//! the broker's supervisor, which replaces a connection that is lost or stalls). Its
//! channel and queue are its own: the queue is server-named, exclusive and auto-deleted,
//! so it dies with its channel's consumer. Whenever the link is lost (the channel closed,
//! or the broker moved to a new connection) the bus opens a fresh channel and queue and
//! binds every user connected to this instance at that moment. While it is down, pokes
//! are lost (each connection reads its log on its next heartbeat anyway) and health says
//! so.
//!
//! A poke is a message with an empty body; a signal (an ephemeral frame) is one whose
//! body is the frame. A signal for a user connected nowhere is routed to no queue and
//! dropped by RabbitMQ, which is what "to the members online" means.

use super::hub::{Hub, UserBus};
use crate::broker::BrokerError;
use crate::broker::amqp::AmqpBroker;
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The longest wait between two attempts to link up again.
const MOST_BETWEEN_ATTEMPTS: Duration = Duration::from_secs(5);

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// A live link to RabbitMQ: the channel and this instance's queue on it.
#[derive(Clone)]
struct Link {
    channel: Channel,
    queue: String,
}

/// A link just opened: its consumer, whose end means the link is lost, and the broker
/// connection's generation it lives on.
struct Opened {
    consumer: lapin::Consumer,
    generation: u64,
}

/// The RabbitMQ bus of one instance.
pub struct AmqpBus {
    broker: AmqpBroker,
    exchange: String,
    hub: Weak<Hub>,
    /// The live link; `None` while the bus is down.
    link: Mutex<Option<Link>>,
    /// Why the bus is down, while it is.
    trouble: Mutex<Option<String>>,
}

impl AmqpBus {
    /// Starts the bus for `hub` on `broker`'s connection: links up now if RabbitMQ
    /// answers, and again whenever the link is lost, for as long as the bus lives.
    pub async fn start(broker: AmqpBroker, exchange: &str, hub: &Arc<Hub>) -> Arc<Self> {
        let bus = Arc::new(AmqpBus {
            broker,
            exchange: exchange.to_owned(),
            hub: Arc::downgrade(hub),
            link: Mutex::new(None),
            trouble: Mutex::new(Some("not connected yet".into())),
        });
        let first = bus.link_up().await;
        tokio::spawn(keep_up(Arc::downgrade(&bus), first));
        bus
    }

    /// Opens a link: channel, exchange, queue and consumer, then binds every user
    /// connected here.
    async fn link_up(&self) -> Result<Opened, LinkError> {
        let (channel, generation) = self.broker.open_channel().await?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        // Server-named, exclusive and auto-deleted: it lives as long as this link.
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?
            .name()
            .as_str()
            .to_owned();
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "herald-realtime".into(),
                BasicConsumeOptions {
                    // A lost poke costs nothing: the connection reads the log on its next
                    // heartbeat anyway.
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let link = Link { channel, queue };
        // Installed before the users are read: one who joins meanwhile is bound either by
        // its own join or by the loop below, never by neither.
        *self.link.lock().expect("never poisoned") = Some(link.clone());
        let keys = self.hub.upgrade().map(|hub| hub.keys()).unwrap_or_default();
        for key in &keys {
            bind(&link, &self.exchange, key).await?;
        }
        *self.trouble.lock().expect("never poisoned") = None;
        if !keys.is_empty() {
            tracing::info!(
                users = keys.len(),
                "the real-time bus is up; connected users bound again"
            );
        }
        Ok(Opened {
            consumer,
            generation,
        })
    }

    /// Publishes a poke (`body` empty) or a signal for `key`; while the bus is down it is
    /// lost: a poke's news waits for the connection's heartbeat, a signal is ephemeral.
    async fn publish(&self, key: &str, body: &[u8]) {
        let Some(link) = self.link() else {
            tracing::debug!(key, "the real-time bus is down; a poke or signal is lost");
            return;
        };
        let published = link
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await;
        if let Err(e) = published {
            tracing::warn!(key, error = %e, "publishing on the real-time bus failed");
        }
    }

    fn link(&self) -> Option<Link> {
        self.link.lock().expect("never poisoned").clone()
    }

    /// Marks the bus down, with why, and closes what is left of its link: its channel,
    /// never the broker's connection.
    fn down(&self, why: String) {
        let lost = self.link.lock().expect("never poisoned").take();
        *self.trouble.lock().expect("never poisoned") = Some(why);
        if let Some(lost) = lost {
            tokio::spawn(async move {
                let _ = lost.channel.close(200, "relinking".into()).await;
            });
        }
    }
}

impl Drop for AmqpBus {
    fn drop(&mut self) {
        // Closing the channel ends the consumer, and with it the task keeping it up.
        if let Some(link) = self.link.get_mut().ok().and_then(Option::take)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = link.channel.close(200, "herald stopping".into()).await;
            });
        }
    }
}

/// Rings the hub for every poke while the link holds, and links up again, with a growing
/// wait between attempts, whenever it does not.
async fn keep_up(bus: Weak<AmqpBus>, first: Result<Opened, LinkError>) {
    let mut next = first;
    let mut wait = Duration::from_millis(200);
    loop {
        match next {
            Ok(Opened {
                mut consumer,
                generation,
            }) => {
                wait = Duration::from_millis(200);
                let (hub, broker) = match bus.upgrade() {
                    Some(bus) => (bus.hub.clone(), bus.broker.clone()),
                    None => return,
                };
                let poked = async {
                    while let Some(Ok(delivery)) = consumer.next().await {
                        let Some(hub) = hub.upgrade() else { return };
                        let key = delivery.routing_key.as_str();
                        if delivery.data.is_empty() {
                            hub.ring(key);
                        } else if let Ok(signal) = std::str::from_utf8(&delivery.data) {
                            hub.hand(key, signal);
                        }
                    }
                };
                tokio::select! {
                    () = poked => {}
                    () = broker.replaced(generation) => {}
                }
                let Some(bus) = bus.upgrade() else { return };
                tracing::warn!("the real-time bus lost its link to RabbitMQ; linking up again");
                bus.down("the link to RabbitMQ was lost; linking up again".into());
            }
            Err(e) => {
                let Some(bus) = bus.upgrade() else { return };
                tracing::warn!(error = %e, retry_in = ?wait, "the real-time bus cannot reach RabbitMQ; trying again");
                bus.down(format!("cannot reach RabbitMQ: {e}"));
                drop(bus);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MOST_BETWEEN_ATTEMPTS);
            }
        }
        let Some(bus) = bus.upgrade() else { return };
        next = bus.link_up().await;
    }
}

async fn bind(link: &Link, exchange: &str, key: &str) -> Result<(), lapin::Error> {
    link.channel
        .queue_bind(
            link.queue.as_str().into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
#[async_trait]
impl UserBus for AmqpBus {
    async fn bind(&self, key: &str) {
        // While the bus is down there is nothing to bind; reconnecting binds every user.
        let Some(link) = self.link() else { return };
        if let Err(e) = bind(&link, &self.exchange, key).await {
            tracing::warn!(key, error = %e, "binding a user to the real-time bus failed");
        }
    }

    async fn unbind(&self, key: &str) {
        let Some(link) = self.link() else { return };
        let unbound = link
            .channel
            .queue_unbind(
                link.queue.as_str().into(),
                self.exchange.as_str().into(),
                key.into(),
                FieldTable::default(),
            )
            .await;
        if let Err(e) = unbound {
            tracing::warn!(key, error = %e, "unbinding a user from the real-time bus failed");
        }
    }

    async fn poke(&self, key: &str) {
        self.publish(key, b"").await;
    }

    async fn signal(&self, key: &str, signal: &str) {
        self.publish(key, signal.as_bytes()).await;
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.lock().expect("never poisoned").clone()
    }
}
