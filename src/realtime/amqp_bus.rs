//! The bus across instances on RabbitMQ: each instance declares an exclusive queue of its
//! own and binds it to the `realtime` topic exchange with the key of every user connected
//! to it (`user.{tenantId}.{userId}`), so that it receives only its own users' pokes.

use super::hub::{Hub, UserBus};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;

/// The RabbitMQ bus of one instance.
pub struct AmqpBus {
    _connection: Connection,
    channel: Channel,
    exchange: String,
    queue: String,
}

impl AmqpBus {
    /// Connects, declares the exchange and this instance's queue, and rings `hub` for every
    /// poke that reaches the queue.
    pub async fn start(url: &str, exchange: &str, hub: &Arc<Hub>) -> Result<Self, lapin::Error> {
        let properties = ConnectionProperties::default()
            .with_connection_name("herald-realtime".into())
            .enable_auto_recover();
        let connection = Connection::connect(url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        // Server-named, exclusive and auto-deleted: it lives as long as this instance.
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
            .await?;
        let queue = queue.name().as_str().to_owned();
        let mut consumer = channel
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
        let hub = Arc::downgrade(hub);
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let Some(hub) = hub.upgrade() else { return };
                match delivery {
                    Ok(delivery) => hub.ring(delivery.routing_key.as_str()),
                    Err(e) => tracing::warn!(error = %e, "the real-time bus failed a delivery"),
                }
            }
        });
        Ok(AmqpBus {
            _connection: connection,
            channel,
            exchange: exchange.to_owned(),
            queue,
        })
    }
}

#[async_trait]
impl UserBus for AmqpBus {
    async fn bind(&self, key: &str) {
        let bound = self
            .channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        if let Err(e) = bound {
            tracing::warn!(key, error = %e, "binding a user to the real-time bus failed");
        }
    }

    async fn unbind(&self, key: &str) {
        let unbound = self
            .channel
            .queue_unbind(
                self.queue.as_str().into(),
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
        let published = self
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
}
