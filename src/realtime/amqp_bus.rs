//! The bus across instances on RabbitMQ: each instance declares an exclusive queue of its
//! own and binds it to the `realtime` topic exchange with the key of every user connected
//! to it (`user.{tenantId}.{userId}`), so that it receives only its own users' pokes.
//!
//! The queue is server-named and dies with its connection, so lapin's recovery, which
//! declares the old name again, cannot bring it back. The bus reconnects on its own
//! instead: a fresh connection, a fresh queue, and a binding for every user connected to
//! this instance at that moment. While it is down, pokes are lost (each connection reads
//! its log on its next heartbeat anyway) and health says so.

use super::hub::{Hub, UserBus};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The longest wait between two attempts to reconnect.
const MOST_BETWEEN_ATTEMPTS: Duration = Duration::from_secs(5);
/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("no answer within {CONNECT_TIMEOUT:?}")]
    TimedOut,
}

/// A live link to RabbitMQ: the channel and this instance's queue on it.
#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    channel: Channel,
    queue: String,
}

/// The RabbitMQ bus of one instance.
pub struct AmqpBus {
    url: String,
    exchange: String,
    hub: Weak<Hub>,
    /// The live link; `None` while the bus is down.
    link: Mutex<Option<Link>>,
    /// Why the bus is down, while it is.
    trouble: Mutex<Option<String>>,
}

impl AmqpBus {
    /// Starts the bus for `hub`: connects now if RabbitMQ answers, and keeps reconnecting
    /// whenever the link is lost, for as long as the bus lives.
    pub async fn start(url: &str, exchange: &str, hub: &Arc<Hub>) -> Arc<Self> {
        let bus = Arc::new(AmqpBus {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            hub: Arc::downgrade(hub),
            link: Mutex::new(None),
            trouble: Mutex::new(Some("not connected yet".into())),
        });
        let first = bus.connect().await;
        tokio::spawn(keep_up(Arc::downgrade(&bus), first));
        bus
    }

    /// Opens a link: connection, exchange, queue and consumer, then binds every user
    /// connected here. Answers the consumer, whose end means the link is lost.
    async fn connect(&self) -> Result<lapin::Consumer, String> {
        self.link_up().await.map_err(|e| e.to_string())
    }

    async fn link_up(&self) -> Result<lapin::Consumer, LinkError> {
        // No automatic recovery: it would declare the old, server-named queue again.
        let properties =
            ConnectionProperties::default().with_connection_name("herald-realtime".into());
        let connecting = Connection::connect(&self.url, properties);
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| LinkError::TimedOut)??;
        let connection = Arc::new(connection);
        let channel = connection.create_channel().await?;
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
        let link = Link {
            connection,
            channel,
            queue,
        };
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
        Ok(consumer)
    }

    fn link(&self) -> Option<Link> {
        self.link.lock().expect("never poisoned").clone()
    }

    /// Marks the bus down, with why, and closes what is left of its link.
    fn down(&self, why: String) {
        let lost = self.link.lock().expect("never poisoned").take();
        *self.trouble.lock().expect("never poisoned") = Some(why);
        if let Some(lost) = lost {
            tokio::spawn(async move {
                let _ = lost.connection.close(200, "reconnecting".into()).await;
            });
        }
    }
}

impl Drop for AmqpBus {
    fn drop(&mut self) {
        // Closing the connection ends the consumer, and with it the task keeping it up.
        if let Some(link) = self.link.get_mut().ok().and_then(Option::take)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = link.connection.close(200, "herald stopping".into()).await;
            });
        }
    }
}

/// Rings the hub for every poke while the link holds, and reconnects, with a growing wait
/// between attempts, whenever it does not.
async fn keep_up(bus: Weak<AmqpBus>, first: Result<lapin::Consumer, String>) {
    let mut next = first;
    let mut wait = Duration::from_millis(200);
    loop {
        match next {
            Ok(mut consumer) => {
                wait = Duration::from_millis(200);
                let hub = match bus.upgrade() {
                    Some(bus) => bus.hub.clone(),
                    None => return,
                };
                while let Some(Ok(delivery)) = consumer.next().await {
                    let Some(hub) = hub.upgrade() else { return };
                    hub.ring(delivery.routing_key.as_str());
                }
                let Some(bus) = bus.upgrade() else { return };
                tracing::warn!("the real-time bus lost its link to RabbitMQ; reconnecting");
                bus.down("the link to RabbitMQ was lost; reconnecting".into());
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
        next = bus.connect().await;
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
        let Some(link) = self.link() else {
            tracing::debug!(
                key,
                "the real-time bus is down; the poke waits for the heartbeat"
            );
            return;
        };
        let published = link
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default(),
            )
            .await;
        if let Err(e) = published {
            tracing::warn!(key, error = %e, "poking a user on the real-time bus failed");
        }
    }

    fn trouble(&self) -> Option<String> {
        self.trouble.lock().expect("never poisoned").clone()
    }
}
