//! Consuming a RabbitMQ queue, and settling what was consumed.

use super::topology::retry_queue;
use super::{
    ATTEMPTS_HEADER, AmqpBroker, LAST_ERROR_HEADER, REASON_HEADER, header_text, header_u32,
    persistent,
};
use crate::broker::{BrokerError, Consumer, DeadLetterReason, Delivery, QueueSpec, Settle};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Acker, Channel};
use std::time::Duration;

/// Header: the routing key a message was first published with. Retry and dead-letter
/// hops go through the default exchange, which replaces the routing key with a queue name.
const ROUTING_KEY_HEADER: &str = "x-herald-routing-key";

pub(super) struct AmqpConsumer {
    broker: AmqpBroker,
    spec: QueueSpec,
    channel: Channel,
    consumer: lapin::Consumer,
    tag: String,
    /// The connection generation this consumer lives on; when the watchdog replaces the
    /// connection, the consumer ends and the pool consumes again on the new one.
    generation: tokio::sync::watch::Receiver<u64>,
}

impl AmqpConsumer {
    pub(super) async fn start(
        broker: AmqpBroker,
        spec: QueueSpec,
        prefetch: u16,
    ) -> Result<Self, BrokerError> {
        let generation = broker.inner.generation.subscribe();
        let channel = broker.connection().create_channel().await?;
        // The prefetch bounds unacknowledged messages, so a pool never holds more than
        // it can handle.
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions { global: false })
            .await?;
        let tag = format!(
            "herald-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let consumer = channel
            .basic_consume(
                spec.name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions {
                    no_local: false,
                    // Manual acknowledgements: a message is removed only once settled.
                    no_ack: false,
                    exclusive: false,
                    nowait: false,
                },
                FieldTable::default(),
            )
            .await?;
        Ok(AmqpConsumer {
            broker,
            spec,
            channel,
            consumer,
            tag,
            generation,
        })
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let started = *self.generation.borrow_and_update();
        let next = tokio::select! {
            next = self.consumer.next() => next,
            _ = self.generation.wait_for(|g| *g != started) => None,
        };
        let delivery = match next? {
            Ok(delivery) => delivery,
            Err(e) => return Some(Err(e.into())),
        };
        let headers = delivery.properties.headers().clone();
        let failures = header_u32(headers.as_ref(), ATTEMPTS_HEADER).unwrap_or(0);
        let routing_key = header_text(headers.as_ref(), ROUTING_KEY_HEADER)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned());
        let timestamp = *delivery.properties.timestamp();
        let body = bytes::Bytes::from(delivery.data);
        Some(Ok(Delivery::new(
            routing_key.clone(),
            body.clone(),
            message_id.clone(),
            timestamp,
            failures.saturating_add(1),
            delivery.redelivered,
            Box::new(AmqpSettle {
                broker: self.broker.clone(),
                spec: self.spec.clone(),
                acker: delivery.acker,
                headers: headers.unwrap_or_default(),
                routing_key,
                message_id,
                body,
            }),
        )))
    }

    async fn cancel(&mut self) {
        let _ = self
            .channel
            .basic_cancel(
                self.tag.as_str().into(),
                BasicCancelOptions { nowait: false },
            )
            .await;
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // Closing the channel hands every unsettled message back to the queue.
        let channel = self.channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.close(200, "consumer done".into()).await;
            });
        }
    }
}

/// Settles one RabbitMQ delivery. Retries and dead letters are republished with confirms
/// before the original is acknowledged, so a crash in between duplicates at worst.
struct AmqpSettle {
    broker: AmqpBroker,
    spec: QueueSpec,
    acker: Acker,
    headers: FieldTable,
    routing_key: String,
    message_id: Option<String>,
    body: bytes::Bytes,
}

impl AmqpSettle {
    async fn republish(&self, queue: &str, extra: &[(&str, AMQPValue)]) -> Result<(), BrokerError> {
        let mut headers = self.headers.clone();
        headers.insert(
            ROUTING_KEY_HEADER.into(),
            AMQPValue::LongString(self.routing_key.as_str().into()),
        );
        for (name, value) in extra {
            headers.insert((*name).into(), value.clone());
        }
        // The default exchange routes straight to the queue named by the routing key.
        let published = self
            .broker
            .publish_confirmed(
                "",
                queue,
                &self.body,
                persistent(self.message_id.as_deref(), headers),
            )
            .await;
        if let Err(e) = published {
            // Hand the message back so that it is not stuck unacknowledged.
            let _ = self
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
            return Err(BrokerError::Unavailable(format!(
                "republishing to {queue}: {e}"
            )));
        }
        self.ack_original().await
    }

    async fn ack_original(&self) -> Result<(), BrokerError> {
        self.acker.ack(BasicAckOptions { multiple: false }).await?;
        Ok(())
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.ack_original().await
    }

    async fn retry(
        self: Box<Self>,
        attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError> {
        // The shortest declared delay that is not shorter than asked, or the longest.
        let delays = self.spec.retry_delays();
        let delay = delays
            .iter()
            .copied()
            .find(|d| *d >= delay)
            .or(delays.last().copied())
            .unwrap_or(delay);
        let queue = retry_queue(&self.spec, delay);
        self.republish(
            &queue,
            &[
                (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(attempt))),
                (LAST_ERROR_HEADER, text(error)),
            ],
        )
        .await
    }

    async fn dead_letter(
        self: Box<Self>,
        attempt: u32,
        reason: DeadLetterReason,
        error: Option<&str>,
    ) -> Result<(), BrokerError> {
        let failures = match reason {
            DeadLetterReason::Failed => attempt,
            _ => attempt.saturating_sub(1),
        };
        let mut extra = vec![
            (REASON_HEADER, text(reason.as_str())),
            (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(failures))),
        ];
        if let Some(error) = error {
            extra.push((LAST_ERROR_HEADER, text(error)));
        }
        self.republish(&self.spec.dead_letter_queue(), &extra).await
    }
}
