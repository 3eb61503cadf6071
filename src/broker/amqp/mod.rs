//! RabbitMQ through lapin, with automatic connection recovery.
//!
//! Publishes are spread over a small pool of confirm-mode channels; each channel carries
//! many unconfirmed messages at once, and each publish awaits its own confirmation, so
//! that a send is answered 202 only once RabbitMQ has the message on disk. Messages are
//! published `mandatory`, so one that no queue would take comes back as an error instead
//! of vanishing.
//!
//! lapin's automatic recovery reconnects and replays the topology after a network failure.
//! Should that recovery stall (it can, when the broker resets the socket and closes the
//! connection at the same moment), a watchdog opens a fresh connection after
//! [`STALLED_RECOVERY`]; publisher channels and consumers notice the new generation and
//! move over to it.
//!
//! Retries are not requeues: a retried message is republished (confirmed) to a retry queue
//! whose TTL dead-letters it back onto the work queue after the delay, with its attempt
//! count in a header, and only then acknowledged. A final failure is republished to the
//! dead-letter queue with its reason and last error in headers.

mod consumer;
pub mod topology;

use super::{
    Broker, BrokerError, BrokerHealth, Consumer, DeadLetter, Publication, PublishError, QueueSpec,
    QueueStats, Topology,
};
use crate::config::{RabbitMqSettings, redact_url};
use async_trait::async_trait;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, watch};
pub use topology::QueueType;

/// Header: how many times handlers have failed with this message.
pub const ATTEMPTS_HEADER: &str = "x-herald-attempts";
/// Header: why the message was dead-lettered.
pub const REASON_HEADER: &str = "x-herald-reason";
/// Header: the last handler error.
pub const LAST_ERROR_HEADER: &str = "x-herald-last-error";

/// How long the connection may stay down before the watchdog replaces it.
pub const STALLED_RECOVERY: Duration = Duration::from_secs(10);

/// A publisher channel and the connection generation it belongs to.
struct PublisherSlot {
    generation: u64,
    channel: Channel,
}

struct Inner {
    url: SecretString,
    url_for_logs: String,
    queue_type: QueueType,
    topology: Topology,
    /// The live connection; the watchdog swaps in a new one if recovery stalls.
    connection: std::sync::RwLock<Arc<Connection>>,
    /// Bumped whenever the connection is replaced.
    generation: watch::Sender<u64>,
    /// Confirm-mode channels; a broken or outdated one is replaced on its next use.
    publishers: Vec<Mutex<PublisherSlot>>,
    next_publisher: AtomicUsize,
    publish_timeout: Duration,
    closed: AtomicBool,
}

/// The RabbitMQ broker; cheap to clone.
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

/// Connects with lapin's recovery on, and declares the topology.
async fn open(
    url: &str,
    url_for_logs: &str,
    topology: &Topology,
    queue_type: QueueType,
) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default()
        .with_connection_name("herald".into())
        .enable_auto_recover()
        // Keep trying for as long as the broker is away; sends answer 503 meanwhile.
        .configure_backoff(|b| {
            b.with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times()
        });
    let connection = Connection::connect(url, properties)
        .await
        .map_err(|e| BrokerError::Unavailable(format!("connecting to {url_for_logs}: {e}")))?;
    let declaring = connection.create_channel().await?;
    topology::declare(&declaring, topology, queue_type).await?;
    let _ = declaring.close(200, "topology declared".into()).await;
    Ok(connection)
}

impl AmqpBroker {
    /// Connects, declares the topology and opens the publisher channels.
    pub async fn connect(
        topology: Topology,
        settings: &RabbitMqSettings,
        publish_timeout: Duration,
    ) -> Result<Self, BrokerError> {
        let url_for_logs = redact_url(settings.url.expose_secret());
        let queue_type = if settings.quorum_queues {
            QueueType::Quorum
        } else {
            QueueType::Classic
        };
        let connection = open(
            settings.url.expose_secret(),
            &url_for_logs,
            &topology,
            queue_type,
        )
        .await?;
        let mut publishers = Vec::with_capacity(settings.confirm_channels);
        for _ in 0..settings.confirm_channels {
            publishers.push(Mutex::new(PublisherSlot {
                generation: 0,
                channel: confirm_channel(&connection).await?,
            }));
        }
        tracing::info!(url = %url_for_logs, ?queue_type, "connected to RabbitMQ, topology declared");
        let broker = AmqpBroker {
            inner: Arc::new(Inner {
                url: settings.url.clone(),
                url_for_logs,
                queue_type,
                topology,
                connection: std::sync::RwLock::new(Arc::new(connection)),
                generation: watch::channel(0).0,
                publishers,
                next_publisher: AtomicUsize::new(0),
                publish_timeout,
                closed: AtomicBool::new(false),
            }),
        };
        tokio::spawn(watchdog(Arc::downgrade(&broker.inner)));
        Ok(broker)
    }

    /// The live connection.
    fn connection(&self) -> Arc<Connection> {
        self.inner
            .connection
            .read()
            .expect("connection lock poisoned")
            .clone()
    }

    /// A publisher channel, round robin, reopened if it broke or belongs to a replaced
    /// connection.
    async fn publisher(&self) -> Result<Channel, PublishError> {
        let index =
            self.inner.next_publisher.fetch_add(1, Ordering::Relaxed) % self.inner.publishers.len();
        let generation = *self.inner.generation.borrow();
        let mut slot = self.inner.publishers[index].lock().await;
        let status = slot.channel.status();
        let broken = !status.connected() && !status.reconnecting();
        if slot.generation != generation || broken {
            let connection = self.connection();
            if connection.status().connected() {
                slot.channel = confirm_channel(&connection)
                    .await
                    .map_err(|e| PublishError::Unavailable(e.to_string()))?;
                slot.generation = generation;
            }
        }
        Ok(slot.channel.clone())
    }

    /// Publishes and waits for the broker's confirmation.
    pub(crate) async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let channel = self.publisher().await?;
        let confirmed = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    // mandatory: an unroutable message is returned to us, not dropped.
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    body,
                    properties,
                )
                .await?;
            confirm.await
        };
        match tokio::time::timeout(self.inner.publish_timeout, confirmed).await {
            Err(_) => Err(PublishError::Timeout),
            Ok(Err(e)) => Err(PublishError::Unavailable(e.to_string())),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            }),
            // reject-publish overflow answers a full queue with a nack.
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(
                "the channel is not in confirm mode".into(),
            )),
        }
    }

    /// A channel for one-off operations, closed after use.
    async fn scratch_channel(&self) -> Result<Channel, BrokerError> {
        Ok(self.connection().create_channel().await?)
    }
}

/// Replaces the connection when it has been down longer than [`STALLED_RECOVERY`], or is
/// closed for good, for as long as the broker lives.
async fn watchdog(inner: std::sync::Weak<Inner>) {
    let mut down_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Relaxed) {
            return;
        }
        let current = inner
            .connection
            .read()
            .expect("connection lock poisoned")
            .clone();
        let status = current.status();
        if status.connected() {
            down_since = None;
            continue;
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        let gone_for_good = status.closed() || status.errored();
        if !gone_for_good && since.elapsed() < STALLED_RECOVERY {
            continue;
        }
        match open(
            inner.url.expose_secret(),
            &inner.url_for_logs,
            &inner.topology,
            inner.queue_type,
        )
        .await
        {
            Ok(fresh) => {
                *inner.connection.write().expect("connection lock poisoned") = Arc::new(fresh);
                inner.generation.send_modify(|g| *g += 1);
                down_since = None;
                tracing::warn!(url = %inner.url_for_logs, "RabbitMQ recovery stalled; opened a new connection");
                tokio::spawn(async move {
                    let _ = current.close(200, "replaced".into()).await;
                });
            }
            Err(e) => tracing::warn!(error = %e, "RabbitMQ is still unreachable"),
        }
    }
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// The properties of every message Herald publishes.
pub(crate) fn persistent(message_id: Option<&str>, headers: FieldTable) -> BasicProperties {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        // 2 = persistent: written to disk before it is confirmed.
        .with_delivery_mode(2)
        .with_timestamp(now)
        .with_headers(headers);
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    properties
}

/// Reads a header as a whole number.
pub(crate) fn header_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    match headers?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

/// Reads a header as text.
pub(crate) fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// RabbitMQ's own reason for a dead letter, from the first `x-death` entry.
fn death_reason(headers: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    header_text(Some(first), "reason")
}

#[async_trait]
impl Broker for AmqpBroker {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn publish(&self, publication: Publication) -> Result<(), PublishError> {
        self.publish_confirmed(
            &publication.exchange,
            &publication.routing_key,
            &publication.body,
            persistent(Some(&publication.message_id), FieldTable::default()),
        )
        .await
    }

    async fn consume(
        &self,
        queue: &QueueSpec,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        Ok(Box::new(
            consumer::AmqpConsumer::start(self.clone(), queue.clone(), prefetch).await?,
        ))
    }

    async fn queue_stats(&self, queue_name: &str) -> Result<QueueStats, BrokerError> {
        let channel = self.scratch_channel().await?;
        // Passive: only look; a missing queue is an error, not a new queue.
        let queue = channel
            .queue_declare(
                queue_name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "done".into()).await;
        let queue = queue?;
        Ok(QueueStats {
            message_count: u64::from(queue.message_count()),
            consumer_count: u64::from(queue.consumer_count()),
        })
    }

    async fn dead_letters(
        &self,
        queue: &QueueSpec,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        // Peek: take without acknowledging, then close the channel, which puts every
        // message back where it was.
        let channel = self.scratch_channel().await?;
        let dlq = queue.dead_letter_queue();
        let mut letters = Vec::new();
        while letters.len() < limit {
            let Some(message) = channel
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            let delivery = message.delivery;
            let headers = delivery.properties.headers().as_ref();
            letters.push(DeadLetter {
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                routing_key: delivery.routing_key.as_str().to_owned(),
                reason: header_text(headers, REASON_HEADER)
                    .or_else(|| death_reason(headers))
                    .unwrap_or_else(|| "unknown".into()),
                last_error: header_text(headers, LAST_ERROR_HEADER),
                attempts: header_u32(headers, ATTEMPTS_HEADER).unwrap_or(0),
                body: bytes::Bytes::from(delivery.data),
            });
        }
        let _ = channel.close(200, "peeked".into()).await;
        Ok(letters)
    }

    async fn replay_dead_letters(
        &self,
        queue: &QueueSpec,
        limit: usize,
    ) -> Result<u64, BrokerError> {
        // Take each dead letter, republish it (confirmed) to the work queue through the
        // default exchange without Herald's dead-letter headers, then acknowledge it.
        let channel = self.scratch_channel().await?;
        let dlq = queue.dead_letter_queue();
        let mut moved = 0;
        while moved < limit as u64 {
            let Some(message) = channel
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            let delivery = message.delivery;
            let mut headers = FieldTable::default();
            if let Some(old) = delivery.properties.headers() {
                for (name, value) in old.inner() {
                    let ours = [ATTEMPTS_HEADER, REASON_HEADER, LAST_ERROR_HEADER, "x-death"];
                    if !ours.contains(&name.as_str()) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
            let message_id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned());
            let republished = self
                .publish_confirmed(
                    "",
                    &queue.name,
                    &delivery.data,
                    persistent(message_id.as_deref(), headers),
                )
                .await;
            match republished {
                Ok(()) => {
                    delivery
                        .acker
                        .ack(lapin::options::BasicAckOptions { multiple: false })
                        .await?;
                    moved += 1;
                }
                Err(e) => {
                    let _ = channel.close(200, "replay failed".into()).await;
                    return Err(BrokerError::Unavailable(format!(
                        "replaying to {}: {e}",
                        queue.name
                    )));
                }
            }
        }
        let _ = channel.close(200, "replayed".into()).await;
        Ok(moved)
    }

    async fn health(&self) -> BrokerHealth {
        let connection = self.connection();
        let status = connection.status();
        let healthy = status.connected() && !status.blocked();
        let detail = if status.blocked() {
            "RabbitMQ has blocked publishing (a resource alarm is raised)".to_owned()
        } else if status.connected() {
            format!("connected to {}", self.inner.url_for_logs)
        } else if status.reconnecting() {
            format!("reconnecting to {}", self.inner.url_for_logs)
        } else {
            format!("not connected to {}", self.inner.url_for_logs)
        };
        BrokerHealth {
            healthy,
            broker: "rabbitmq",
            detail,
        }
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        let _ = self
            .connection()
            .close(200, "herald shutting down".into())
            .await;
    }
}
