//! Declares the contract's topology on RabbitMQ. Every option that matters for durability
//! is spelled out here rather than left to a broker default.

use crate::broker::{BrokerError, QueueSpec, Topology};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// How queues are replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// One node holds the queue: fine for a single broker.
    Classic,
    /// Raft-replicated across the cluster, for clustered deployments.
    Quorum,
}

/// The name of the backoff queue where retried messages of `queue` wait out `delay`.
pub fn backoff_queue(queue: &QueueSpec, delay: Duration) -> String {
    format!("{}.backoff.{}ms", queue.name, delay.as_millis())
}

fn millis(d: Duration) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn queue_type_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    match queue_type {
        QueueType::Classic => args.insert("x-queue-type".into(), text("classic")),
        QueueType::Quorum => args.insert("x-queue-type".into(), text("quorum")),
    };
    args
}

/// The arguments of a work queue, as the contract sets them.
pub fn work_queue_arguments(queue: &QueueSpec, queue_type: QueueType) -> FieldTable {
    let mut args = queue_type_arguments(queue_type);
    // Messages older than the TTL are dead-lettered with reason "expired".
    args.insert("x-message-ttl".into(), millis(queue.message_ttl));
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(queue.max_length.get())),
    );
    // A full queue nacks new publishes (the sender gets 503) instead of dropping the
    // oldest message, which is RabbitMQ's default (drop-head).
    args.insert("x-overflow".into(), text("reject-publish"));
    // Dead letters go through the default exchange straight to '<queue>.dlq'.
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert(
        "x-dead-letter-routing-key".into(),
        text(&queue.dead_letter_queue()),
    );
    if queue_type == QueueType::Quorum {
        // Without this, quorum queues dead-letter at most once and may lose dead letters.
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    }
    args
}

/// The arguments of a backoff queue: none but its type. Its messages leave it only when
/// Herald's consumers take them once due (see the consumer), never by a TTL and a
/// dead-letter hop, which a classic queue makes at most once and a full work queue
/// refuses. One queue per delay, so that its head is always the first message due.
pub fn backoff_queue_arguments(queue_type: QueueType) -> FieldTable {
    queue_type_arguments(queue_type)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        exclusive: false,
        auto_delete: false,
        passive: false,
        nowait: false,
    }
}

fn failed(what: String) -> impl FnOnce(lapin::Error) -> BrokerError {
    move |e| BrokerError::Topology {
        what,
        cause: e.to_string(),
    }
}

/// Declares every exchange, queue and binding of `topology`. Declaring is idempotent; a
/// queue that exists with other arguments is an error naming it.
pub async fn declare(
    channel: &Channel,
    topology: &Topology,
    queue_type: QueueType,
) -> Result<(), BrokerError> {
    for exchange in topology.exchanges() {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: false,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    nowait: false,
                },
                FieldTable::default(),
            )
            .await
            .map_err(failed(format!("exchange {exchange}")))?;
    }
    for queue in &topology.queues {
        declare_queue(channel, queue, queue_type).await?;
    }
    Ok(())
}

async fn declare_queue(
    channel: &Channel,
    queue: &QueueSpec,
    queue_type: QueueType,
) -> Result<(), BrokerError> {
    let dlq = queue.dead_letter_queue();
    // The dead-letter queue has no TTL and no length limit: dead letters are never dropped.
    channel
        .queue_declare(
            dlq.as_str().into(),
            durable(),
            queue_type_arguments(queue_type),
        )
        .await
        .map_err(failed(format!("queue {dlq}")))?;
    channel
        .queue_declare(
            queue.name.as_str().into(),
            durable(),
            work_queue_arguments(queue, queue_type),
        )
        .await
        .map_err(failed(format!("queue {}", queue.name)))?;
    for routing_key in &queue.routing_keys {
        channel
            .queue_bind(
                queue.name.as_str().into(),
                queue.exchange.as_str().into(),
                routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed(format!(
                "binding {} to {}",
                queue.name, queue.exchange
            )))?;
    }
    for delay in queue.retry_delays() {
        let name = backoff_queue(queue, delay);
        channel
            .queue_declare(
                name.as_str().into(),
                durable(),
                backoff_queue_arguments(queue_type),
            )
            .await
            .map_err(failed(format!("queue {name}")))?;
    }
    Ok(())
}

/// Every queue [`declare`] makes for `topology`: each work queue, its dead-letter queue
/// and its backoff queues.
pub fn queue_names(topology: &Topology) -> Vec<String> {
    let mut names = Vec::new();
    for queue in &topology.queues {
        names.push(queue.name.clone());
        names.push(queue.dead_letter_queue());
        names.extend(
            queue
                .retry_delays()
                .into_iter()
                .map(|delay| backoff_queue(queue, delay)),
        );
    }
    names
}

/// Deletes every queue and exchange [`declare`] made for `topology`, with what they hold:
/// for tests and benchmarks that declare under a prefix of their own and should leave
/// nothing behind. Answers how many were deleted, of how many.
pub async fn delete(channel: &Channel, topology: &Topology) -> (usize, usize) {
    let queues = queue_names(topology);
    let exchanges = topology.exchanges();
    let mut deleted = 0;
    for queue in &queues {
        let deleting = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
        deleted += usize::from(deleting.await.is_ok());
    }
    for exchange in &exchanges {
        let deleting =
            channel.exchange_delete((*exchange).into(), ExchangeDeleteOptions::default());
        deleted += usize::from(deleting.await.is_ok());
    }
    (deleted, queues.len() + exchanges.len())
}
