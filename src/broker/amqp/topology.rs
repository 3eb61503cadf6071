//! Declares the contract's topology on RabbitMQ, beside the services that already use it:
//! what exists is taken as it is, what is missing is declared with the arguments those
//! services declare themselves, and the rest is in policies ([`super::policies`]).

use crate::broker::{BrokerError, QueueSpec, Topology};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
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
    // A classic queue is declared without a type: RabbitMQ's default, and what the
    // services sharing the broker declare (an explicit "classic" would not match theirs).
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), text("quorum"));
    }
    args
}

/// The arguments a work queue is created with: its type, TTL and length, as the seeds'
/// own `assertQueue` calls declare them, and nothing else, so that theirs succeed against
/// it. What Herald needs besides (reject-publish overflow, the dead-letter route) is in
/// its policy (see [`super::policies`]), which can change where arguments cannot.
pub fn work_queue_arguments(queue: &QueueSpec, queue_type: QueueType) -> FieldTable {
    let mut args = queue_type_arguments(queue_type);
    args.insert("x-message-ttl".into(), millis(queue.message_ttl));
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(queue.max_length.get())),
    );
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

/// What declaring found.
#[derive(Debug, Default)]
pub struct Declared {
    /// The work queues that existed already and were taken as they are (declared by the
    /// services sharing the broker, or by an earlier Herald): their arguments may differ
    /// from what Herald would declare.
    pub adopted: Vec<String>,
}

/// Whether the queue `name` exists. A passive declare of a missing queue closes its
/// channel, so each look takes a channel of its own.
async fn exists(connection: &Connection, name: &str) -> Result<bool, BrokerError> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let looked = channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await;
    match looked {
        Ok(_) => {
            let _ = channel.close(200, "looked".into()).await;
            Ok(true)
        }
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(failed(format!("queue {name}"))(e)),
    }
}

fn not_found(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// Declares the queue `name` with `arguments` unless it exists: a queue that exists is
/// taken as it is, for a declaration with other arguments would be refused (406) and a
/// queue's arguments cannot change without deleting it. Answers whether it existed.
async fn declare_if_absent(
    connection: &Connection,
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<bool, BrokerError> {
    if exists(connection, name).await? {
        return Ok(true);
    }
    channel
        .queue_declare(name.into(), durable(), arguments)
        .await
        .map_err(failed(format!("queue {name}")))?;
    Ok(false)
}

/// Declares every exchange, queue and binding of `topology` that is not there yet; binds
/// each work queue (bindings are idempotent), whether Herald declared it or found it.
pub async fn declare(
    connection: &Connection,
    topology: &Topology,
    queue_type: QueueType,
) -> Result<Declared, BrokerError> {
    let channel = connection.create_channel().await?;
    let exchange = |name: &str, kind: ExchangeKind| {
        // No arguments: the seeds declare the same exchanges without any, and RabbitMQ
        // refuses a declaration whose alternate exchange differs; the alternate exchange
        // is in a policy.
        channel.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                passive: false,
                durable: true,
                auto_delete: false,
                internal: false,
                nowait: false,
            },
            FieldTable::default(),
        )
    };
    for name in topology.exchanges() {
        exchange(name, ExchangeKind::Topic)
            .await
            .map_err(failed(format!("exchange {name}")))?;
    }
    let unrouted = topology.unrouted.as_str();
    exchange(unrouted, ExchangeKind::Fanout)
        .await
        .map_err(failed(format!("exchange {unrouted}")))?;
    declare_if_absent(
        connection,
        &channel,
        unrouted,
        queue_type_arguments(queue_type),
    )
    .await?;
    bind(&channel, unrouted, unrouted, "").await?;
    let mut declared = Declared::default();
    for queue in &topology.queues {
        if declare_queue(connection, &channel, queue, queue_type).await? {
            declared.adopted.push(queue.name.clone());
        }
    }
    let _ = channel.close(200, "topology declared".into()).await;
    Ok(declared)
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), BrokerError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed(format!("binding {queue} to {exchange}")))
}

/// Declares one work queue with its dead-letter and backoff queues; answers whether the
/// work queue existed already.
async fn declare_queue(
    connection: &Connection,
    channel: &Channel,
    queue: &QueueSpec,
    queue_type: QueueType,
) -> Result<bool, BrokerError> {
    // The dead-letter queue has no TTL and no length limit: dead letters are never dropped.
    let dlq = queue.dead_letter_queue();
    declare_if_absent(connection, channel, &dlq, queue_type_arguments(queue_type)).await?;
    let arguments = work_queue_arguments(queue, queue_type);
    let existed = declare_if_absent(connection, channel, &queue.name, arguments).await?;
    for routing_key in &queue.routing_keys {
        bind(channel, &queue.name, &queue.exchange, routing_key).await?;
    }
    for delay in queue.retry_delays() {
        let name = backoff_queue(queue, delay);
        declare_if_absent(
            connection,
            channel,
            &name,
            backoff_queue_arguments(queue_type),
        )
        .await?;
    }
    Ok(existed)
}

/// Every queue [`declare`] makes for `topology`: each work queue, its dead-letter queue
/// and its backoff queues, and the unrouted queue.
pub fn queue_names(topology: &Topology) -> Vec<String> {
    let mut names = vec![topology.unrouted.clone()];
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
    let mut exchanges = topology.exchanges();
    exchanges.push(&topology.unrouted);
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
