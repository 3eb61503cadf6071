//! Consuming a RabbitMQ queue, and settling what was consumed.
//!
//! A consumer takes from the work queue and from the queue's backoff queues, where retried
//! messages wait out their delay. A backoff queue holds messages of one delay, so its head
//! is always the first due: a task per backoff queue takes the head, holds it
//! (unacknowledged) until it is due, and hands it to the pool like any other message. The
//! retry is thus at-least-once from end to end: it never passes through a dead-letter hop,
//! which classic queues do at most once (dropping what a full work queue refuses), and it
//! does not compete with new sends for room in the work queue, so it comes back within
//! its backoff however full that is.

use super::topology::backoff_queue;
use super::{
    ATTEMPTS_HEADER, AmqpBroker, DUE_HEADER, EARLIER_ATTEMPTS_HEADER, LAST_ERROR_HEADER,
    REASON_HEADER, ROUTING_KEY_HEADER, header_i64, header_text, header_u32, persistent,
};
use crate::broker::{BrokerError, Consumer, DeadLetterReason, Delivery, QueueSpec, Settle};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Acker, Channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Milliseconds since the epoch: when a retried message is due, in its header.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) struct AmqpConsumer {
    broker: AmqpBroker,
    spec: QueueSpec,
    channel: Channel,
    work: lapin::Consumer,
    /// Retried messages that have come due, from the backoff queues' holders.
    due: mpsc::Receiver<AmqpDelivery>,
    /// Kept so that `due` stays open when the queue has no backoff queue.
    _due_open: mpsc::Sender<AmqpDelivery>,
    /// The holders of the backoff queues' heads.
    holders: Vec<JoinHandle<()>>,
    tags: Vec<String>,
    /// The connection generation this consumer lives on; when the watchdog replaces the
    /// connection, the consumer ends and the pool consumes again on the new one.
    generation: tokio::sync::watch::Receiver<u64>,
}

/// Starts consuming `queue` on `channel` under a tag of its own.
async fn consume(
    channel: &Channel,
    queue: &str,
    tags: &mut Vec<String>,
) -> Result<lapin::Consumer, BrokerError> {
    let tag = format!(
        "herald-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    let consumer = channel
        .basic_consume(
            queue.into(),
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
    tags.push(tag);
    Ok(consumer)
}

/// Hands each message of a backoff queue over once it is due. The queue holds messages of
/// one delay in the order they were retried, so they come due in that order.
async fn hold_until_due(mut backoff: lapin::Consumer, due: mpsc::Sender<AmqpDelivery>) {
    while let Some(Ok(delivery)) = backoff.next().await {
        let due_at = header_i64(delivery.properties.headers().as_ref(), DUE_HEADER).unwrap_or(0);
        let wait = due_at.saturating_sub(now_ms());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
        }
        if due.send(delivery).await.is_err() {
            // The consumer is gone; its channel's closing puts the message back.
            return;
        }
    }
}

impl AmqpConsumer {
    pub(super) async fn start(
        broker: AmqpBroker,
        spec: QueueSpec,
        prefetch: u16,
    ) -> Result<Self, BrokerError> {
        let generation = broker.inner.generation.subscribe();
        let channel = broker.connection()?.create_channel().await?;
        // The prefetch bounds unacknowledged messages per queue consumed, so a pool never
        // holds more than it can handle (and each backoff queue no more than that).
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions { global: false })
            .await?;
        let mut tags = Vec::new();
        let work = consume(&channel, &spec.name, &mut tags).await?;
        let (due_open, due) = mpsc::channel(1);
        let mut holders = Vec::new();
        for delay in spec.retry_delays() {
            let backoff = consume(&channel, &backoff_queue(&spec, delay), &mut tags).await?;
            holders.push(tokio::spawn(hold_until_due(backoff, due_open.clone())));
        }
        Ok(AmqpConsumer {
            broker,
            spec,
            channel,
            work,
            due,
            _due_open: due_open,
            holders,
            tags,
            generation,
        })
    }

    fn delivery(&self, delivery: AmqpDelivery) -> Delivery {
        let headers = delivery.properties.headers().clone();
        let failures = header_u32(headers.as_ref(), ATTEMPTS_HEADER).unwrap_or(0);
        let earlier = header_u32(headers.as_ref(), EARLIER_ATTEMPTS_HEADER).unwrap_or(0);
        let routing_key = header_text(headers.as_ref(), ROUTING_KEY_HEADER)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned());
        let timestamp = *delivery.properties.timestamp();
        let body = bytes::Bytes::from(delivery.data);
        Delivery::new(
            routing_key.clone(),
            body.clone(),
            message_id.clone(),
            timestamp,
            (failures.saturating_add(1), earlier),
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
        )
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        let started = *self.generation.borrow_and_update();
        let next = tokio::select! {
            // Retries first: they were accepted before anything waiting in the work queue.
            biased;
            Some(due) = self.due.recv() => Some(Ok(due)),
            next = self.work.next() => next,
            _ = self.generation.wait_for(|g| *g != started) => None,
        };
        match next? {
            Ok(delivery) => Some(Ok(self.delivery(delivery))),
            Err(e) => Some(Err(e.into())),
        }
    }

    async fn cancel(&mut self) {
        for holder in &self.holders {
            holder.abort();
        }
        for tag in &self.tags {
            let _ = self
                .channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions { nowait: false })
                .await;
        }
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        for holder in &self.holders {
            holder.abort();
        }
        // Closing the channel hands every unsettled message back to its queue, the held
        // retries included.
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
                self.broker.inner.publish_timeout,
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
        let due = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        let queue = backoff_queue(&self.spec, delay);
        self.republish(
            &queue,
            &[
                (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(attempt))),
                (LAST_ERROR_HEADER, text(error)),
                (DUE_HEADER, AMQPValue::LongLongInt(due)),
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
