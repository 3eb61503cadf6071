//! The brokers events are queued on, behind one [`Broker`] trait.
//!
//! - [`amqp`]: RabbitMQ through lapin, for production and scaling out.
//! - [`embedded`]: a durable broker inside Herald whose queues live in a SQLite file, the
//!   default, so that Herald runs with no setup.
//!
//! Both give the same guarantees, held by one conformance suite (`tests/broker.rs`): a
//! publish returns only once the message is durable; a full queue refuses new messages
//! and keeps the ones it has; expired and finally failed messages are dead-lettered with
//! their reason; a message whose worker dies is delivered again.

pub mod amqp;
pub mod embedded;
pub mod topology;

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

pub use topology::{Backoff, QueueSpec, Topology};

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The exchange, with its prefix.
    pub exchange: String,
    /// The routing key (`push.mobile`).
    pub routing_key: String,
    /// The event's id, carried as the AMQP `message_id`.
    pub message_id: String,
    /// The serialized envelope.
    pub body: Bytes,
}

impl Publication {
    /// The publication of `envelope`: to its kind's exchange, with its routing key and id.
    pub fn of(envelope: &crate::domain::Envelope, topology: &Topology) -> Self {
        Publication {
            exchange: topology.queue(envelope.event.kind()).exchange.clone(),
            routing_key: envelope.event.routing_key().into_owned(),
            message_id: envelope.id.to_string(),
            body: envelope.to_bytes().into(),
        }
    }
}

/// Why a publish was not accepted. Every variant means the event is not queued and the
/// sender should try again later (503 with `Retry-After`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The queue holds its maximum length and refuses new messages.
    #[error("queue {0} is full")]
    QueueFull(String),
    /// The broker refused the message (RabbitMQ nack; a full queue nacks too).
    #[error("the broker refused the message")]
    Nacked,
    /// No queue is bound for the routing key, so the message would be lost.
    #[error("no queue is bound to exchange {exchange} for routing key {routing_key}")]
    Unroutable {
        /// The exchange.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// The broker did not confirm in time.
    #[error("the broker did not confirm the message in time")]
    Timeout,
    /// The broker cannot be reached.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// The broker has blocked publishing (a RabbitMQ resource alarm); nothing was sent.
    #[error("the broker has blocked publishing ({0})")]
    Blocked(String),
}

impl PublishError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PublishError::QueueFull(_) => "full",
            PublishError::Nacked => "nacked",
            PublishError::Unroutable { .. } => "unroutable",
            PublishError::Timeout => "timeout",
            PublishError::Unavailable(_) => "unavailable",
            PublishError::Blocked(_) => "blocked",
        }
    }
}

/// A broker failure outside publishing.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached or refused an operation.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The message was delivered again to another worker after its lease ran out, so this
    /// worker may no longer settle it.
    #[error("the lease on message {0} was lost; it has been delivered again")]
    LeaseLost(String),
    /// The embedded broker's database failed.
    #[error("embedded broker storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// Declaring the topology failed (for example, a queue exists with other arguments).
    #[error("declaring {what}: {cause}")]
    Topology {
        /// What was being declared.
        what: String,
        /// The broker's answer.
        cause: String,
    },
}

impl From<lapin::Error> for BrokerError {
    fn from(e: lapin::Error) -> Self {
        BrokerError::Unavailable(e.to_string())
    }
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// It waited longer than the queue's message TTL.
    Expired,
    /// Its handler failed for good, or ran out of attempts.
    Failed,
    /// It is not an event Herald may act on: it could not be read as one, or its tenant
    /// does not exist.
    Rejected,
}

impl DeadLetterReason {
    /// The reason as written in headers and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Failed => "failed",
            DeadLetterReason::Rejected => "rejected",
        }
    }
}

/// A message in a dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The event id (the AMQP `message_id`), when the message had one.
    pub message_id: Option<String>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Why it was dead-lettered (`expired`, `failed`, `rejected`, or RabbitMQ's own).
    pub reason: String,
    /// The last handler error, if a handler failed.
    pub last_error: Option<String>,
    /// How many times a handler tried it.
    pub attempts: u32,
    /// The message body.
    pub body: Bytes,
}

/// A dead letter dropped to keep its queue within its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedLetter {
    /// The event id (the AMQP `message_id`), when the message had one.
    pub message_id: Option<String>,
    /// Why it had been dead-lettered.
    pub reason: String,
    /// Which bound dropped it: `length` or `age`.
    pub bound: &'static str,
}

/// How full a queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Messages in the queue (for the embedded broker, including those being handled).
    pub message_count: u64,
    /// Consumers attached.
    pub consumer_count: u64,
}

/// Whether the broker can take work.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerHealth {
    /// Connected and able to publish.
    pub healthy: bool,
    /// Which broker (`embedded`, `rabbitmq`).
    pub broker: &'static str,
    /// A sentence on the state.
    pub detail: String,
}

/// A message taken off a queue, to be settled exactly once.
pub struct Delivery {
    /// The routing key it was published with.
    pub routing_key: String,
    /// The message body.
    pub body: Bytes,
    /// The AMQP `message_id`, if any.
    pub message_id: Option<String>,
    /// The AMQP `timestamp` (seconds since the epoch), if any.
    pub timestamp: Option<u64>,
    /// Which attempt this is: 1 the first time a handler sees the message, growing with
    /// each retry. Redelivery after a crash does not count as an attempt. A replay from
    /// the dead-letter queue starts again at 1.
    pub attempt: u32,
    /// Attempts made before the message was last replayed from its dead-letter queue, so
    /// that the ledger counts every attempt.
    pub earlier_attempts: u32,
    /// Whether the broker delivered it before without it being settled (a worker died).
    pub redelivered: bool,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("message_id", &self.message_id)
            .field("attempt", &self.attempt)
            .field("earlier_attempts", &self.earlier_attempts)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Builds a delivery; for broker implementations.
    pub(crate) fn new(
        routing_key: String,
        body: Bytes,
        message_id: Option<String>,
        timestamp: Option<u64>,
        (attempt, earlier_attempts): (u32, u32),
        redelivered: bool,
        settle: Box<dyn Settle>,
    ) -> Self {
        Delivery {
            routing_key,
            body,
            message_id,
            timestamp,
            attempt,
            earlier_attempts,
            redelivered,
            settle,
        }
    }

    /// Removes the message for good: it was handled.
    pub async fn ack(self) -> Result<(), BrokerError> {
        self.settle.ack().await
    }

    /// Puts the message back to be tried again after `delay`, counting one more attempt.
    pub async fn retry(self, delay: Duration, error: &str) -> Result<(), BrokerError> {
        self.settle.retry(self.attempt, delay, error).await
    }

    /// Moves the message to its queue's dead-letter queue.
    pub async fn dead_letter(
        self,
        reason: DeadLetterReason,
        error: Option<&str>,
    ) -> Result<(), BrokerError> {
        self.settle.dead_letter(self.attempt, reason, error).await
    }
}

/// How a broker settles one of its deliveries.
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    async fn retry(
        self: Box<Self>,
        attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError>;
    async fn dead_letter(
        self: Box<Self>,
        attempt: u32,
        reason: DeadLetterReason,
        error: Option<&str>,
    ) -> Result<(), BrokerError>;
}

/// A stream of deliveries from one queue. A worker pool asks for the next delivery only
/// when it has room to handle it.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the consumer is cancelled.
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;

    /// Stops taking new messages; deliveries already handed out may still be settled.
    async fn cancel(&mut self);
}

/// A broker: where events are durably queued until a worker settles them.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Which broker this is, for health answers and logs.
    fn name(&self) -> &'static str;

    /// Publishes one message and returns once the broker holds it durably.
    async fn publish(&self, publication: Publication) -> Result<(), PublishError>;

    /// Publishes several messages, each settled on its own, concurrently.
    async fn publish_all(&self, publications: Vec<Publication>) -> Vec<Result<(), PublishError>> {
        futures_util::future::join_all(publications.into_iter().map(|p| self.publish(p))).await
    }

    /// Starts consuming `queue`, with at most `prefetch` messages unsettled at once.
    async fn consume(
        &self,
        queue: &QueueSpec,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer>, BrokerError>;

    /// How many messages and consumers the named queue has.
    async fn queue_stats(&self, queue_name: &str) -> Result<QueueStats, BrokerError>;

    /// Up to `limit` messages from `queue`'s dead-letter queue, oldest first, left in place.
    async fn dead_letters(
        &self,
        queue: &QueueSpec,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError>;

    /// Moves up to `limit` dead letters of `queue` back onto it, oldest first, as new
    /// messages with their attempts reset; answers how many moved.
    async fn replay_dead_letters(
        &self,
        queue: &QueueSpec,
        limit: usize,
    ) -> Result<u64, BrokerError>;

    /// Drops the dead letters of `queue` past its bounds (older than its maximum age, or
    /// the oldest beyond its maximum length) and answers them, so that they are logged
    /// and counted rather than lost silently.
    async fn trim_dead_letters(&self, queue: &QueueSpec)
    -> Result<Vec<DroppedLetter>, BrokerError>;

    /// Whether the broker can take work now.
    async fn health(&self) -> BrokerHealth;

    /// Closes connections; in-flight deliveries that are not settled will be redelivered.
    async fn close(&self);
}
