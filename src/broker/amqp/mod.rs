//! RabbitMQ through lapin, with automatic connection recovery.
//!
//! Publishes are spread over a small pool of confirm-mode channels; each channel carries
//! many unconfirmed messages at once, and each publish awaits its own confirmation, so
//! that a send is answered 202 only once RabbitMQ has the message on disk. Messages are
//! published `mandatory`, so one that no queue would take comes back as an error instead
//! of vanishing. While RabbitMQ has blocked publishing (a memory or disk alarm), a
//! publish is refused at once rather than left waiting for a confirmation that cannot come.
//!
//! Herald starts whether or not RabbitMQ answers: a supervisor connects, logging each
//! failed attempt and the wait before the next, and until it succeeds every publish and
//! consume is refused as unavailable (sends answer 503, health says why). The same
//! supervisor replaces a connection that is lost, declaring the topology again; publisher
//! channels and consumers notice the new generation and move over to it. (lapin's own
//! recovery is not used: after a broker restart it stalled for good as often as not, and
//! a fresh connection is what it would build anyway.) The real-time bus rides on the same
//! connection ([`AmqpBroker::open_channel`], [`AmqpBroker::replaced`]), so that one
//! Herald holds one connection and one supervisor watches it.
//!
//! Retries are not requeues: a retried message is republished (confirmed) to a backoff
//! queue of its delay, with its attempt count and the time it is due in headers, and only
//! then acknowledged; the queue's consumers hold it until it is due (see [`consumer`]). A
//! final failure is republished to the dead-letter queue with its reason and last error in
//! headers.

mod consumer;
pub mod policies;
pub mod topology;

use super::{
    Broker, BrokerError, BrokerHealth, Consumer, DeadLetter, DroppedLetter, Publication,
    PublishError, QueueSpec, QueueStats, Topology,
};
use crate::telemetry::redact_url;
use async_trait::async_trait;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, watch};
pub use topology::QueueType;

/// Header: how many times handlers have failed with this message.
pub const ATTEMPTS_HEADER: &str = "x-herald-attempts";
/// Header: attempts made before the message was last replayed from its dead-letter queue.
pub const EARLIER_ATTEMPTS_HEADER: &str = "x-herald-earlier-attempts";
/// Header: why the message was dead-lettered.
pub const REASON_HEADER: &str = "x-herald-reason";
/// Header: the last handler error.
pub const LAST_ERROR_HEADER: &str = "x-herald-last-error";
/// Header: when a retried message is due (milliseconds since the epoch).
pub const DUE_HEADER: &str = "x-herald-due";
/// Header: the routing key a message was first published with. Retry and dead-letter
/// hops go through the default exchange, which replaces the routing key with a queue name.
pub const ROUTING_KEY_HEADER: &str = "x-herald-routing-key";
/// Header: the replay that put a dead letter back, so that one replay takes each once.
const REPLAY_HEADER: &str = "x-herald-replay";

/// How long a send's publish is followed for its confirmation after its request was
/// answered 503 (the confirmation then records the event as accepted after all).
const LATE_CONFIRM_LIMIT: Duration = Duration::from_secs(120);

/// How long one attempt to connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// RabbitMQ, as configured (`broker.rabbitmq.*`).
#[derive(Debug, Clone)]
pub struct RabbitMqSettings {
    /// `amqp://user:password@host:port/vhost` (or `amqps://`); holds a password, so it is
    /// kept secret.
    pub url: SecretString,
    /// RabbitMQ's management API (`http://user:password@host:15672`), where Herald sets
    /// its policies; `None` for the AMQP URL's host on port 15672 with its credentials.
    pub management_url: Option<SecretString>,
    /// How many confirm-mode channels publishes are spread over.
    pub confirm_channels: NonZeroUsize,
    /// Declare quorum queues (for clusters) instead of classic ones.
    pub quorum_queues: bool,
    /// How long `herald migrate` waits for RabbitMQ to accept a connection before it
    /// fails (an init container may start before the broker does).
    pub migrate_wait: Duration,
}

/// A publisher channel and the connection generation it belongs to.
struct PublisherSlot {
    generation: u64,
    channel: Option<Channel>,
}

struct Inner {
    url: SecretString,
    url_for_logs: String,
    queue_type: QueueType,
    topology: Topology,
    /// The live connection, once there is one; the supervisor swaps in a new one if
    /// recovery stalls.
    connection: std::sync::RwLock<Option<Arc<Connection>>>,
    /// Why there is no usable connection, while there is none.
    trouble: std::sync::Mutex<Option<String>>,
    /// Bumped whenever the connection is replaced.
    generation: watch::Sender<u64>,
    /// Confirm-mode channels; a broken or outdated one is replaced on its next use.
    publishers: Vec<Mutex<PublisherSlot>>,
    next_publisher: AtomicUsize,
    publish_timeout: Duration,
    closed: AtomicBool,
    management: Result<policies::Management, String>,
    /// What the broker lacks of what Herald needs, as found when the topology was last
    /// set up: shown on `/health/ready`.
    gaps: std::sync::Mutex<Vec<String>>,
}

impl Inner {
    fn setup(&self) -> Setup<'_> {
        Setup {
            topology: &self.topology,
            queue_type: self.queue_type,
            management: &self.management,
        }
    }
}

/// The RabbitMQ broker; cheap to clone.
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

/// The type of queue the settings ask for.
fn queue_type(settings: &RabbitMqSettings) -> QueueType {
    if settings.quorum_queues {
        QueueType::Quorum
    } else {
        QueueType::Classic
    }
}

/// What Herald sets up on RabbitMQ: its topology, and the policies that complete it.
struct Setup<'a> {
    topology: &'a Topology,
    queue_type: QueueType,
    /// The management API, or why there is none.
    management: &'a Result<policies::Management, String>,
}

impl Setup<'_> {
    /// Declares what is missing and sets the policies: the gaps left, one sentence each.
    async fn apply(&self, connection: &Connection) -> Result<Vec<String>, BrokerError> {
        let declared = topology::declare(connection, self.topology, self.queue_type).await?;
        for queue in &declared.adopted {
            tracing::info!(%queue, "the queue exists; taken as it is");
        }
        let gaps = match self.management {
            Ok(management) => policies::apply(management, self.topology, self.queue_type).await,
            Err(e) => vec![format!("the management API's address cannot be made: {e}")],
        };
        for gap in &gaps {
            tracing::warn!(gap = %gap, "RabbitMQ lacks what Herald needs; working without it");
        }
        Ok(gaps)
    }
}

/// Connects and sets up: the connection, and the gaps the setup left.
async fn open(
    url: &str,
    url_for_logs: &str,
    setup: &Setup<'_>,
) -> Result<(Connection, Vec<String>), BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name("herald".into());
    let connecting = Connection::connect(url, properties);
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| {
            BrokerError::Unavailable(format!(
                "connecting to {url_for_logs}: no answer within {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| BrokerError::Unavailable(format!("connecting to {url_for_logs}: {e}")))?;
    let gaps = setup.apply(&connection).await?;
    Ok((connection, gaps))
}

/// The management API of `settings`' broker, or why there is none.
fn management(settings: &RabbitMqSettings) -> Result<policies::Management, String> {
    policies::Management::of(
        settings.url.expose_secret(),
        settings.management_url.as_ref().map(|u| u.expose_secret()),
    )
}

impl AmqpBroker {
    /// Connects and declares the topology. When RabbitMQ does not answer, the broker is
    /// returned all the same, refusing work, while a supervisor keeps trying; a topology
    /// RabbitMQ refuses (a queue declared with other arguments) is an error at once.
    pub async fn connect(
        topology: Topology,
        settings: &RabbitMqSettings,
        publish_timeout: Duration,
    ) -> Result<Self, BrokerError> {
        let url_for_logs = redact_url(settings.url.expose_secret());
        let queue_type = queue_type(settings);
        let management = management(settings);
        let setup = Setup {
            topology: &topology,
            queue_type,
            management: &management,
        };
        let first = open(settings.url.expose_secret(), &url_for_logs, &setup).await;
        let mut gaps = Vec::new();
        let (connection, trouble) = match first {
            Ok((connection, found)) => {
                tracing::info!(url = %url_for_logs, ?queue_type, "connected to RabbitMQ, topology declared");
                gaps = found;
                (Some(Arc::new(connection)), None)
            }
            Err(e @ BrokerError::Topology { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "RabbitMQ is not reachable; Herald answers 503 until it is");
                (None, Some(cause(&e)))
            }
        };
        let publishers = (0..settings.confirm_channels.get())
            .map(|_| {
                Mutex::new(PublisherSlot {
                    generation: 0,
                    channel: None,
                })
            })
            .collect();
        let broker = AmqpBroker {
            inner: Arc::new(Inner {
                url: settings.url.clone(),
                url_for_logs,
                queue_type,
                topology,
                connection: std::sync::RwLock::new(connection),
                trouble: std::sync::Mutex::new(trouble),
                generation: watch::channel(0).0,
                publishers,
                next_publisher: AtomicUsize::new(0),
                publish_timeout,
                closed: AtomicBool::new(false),
                management,
                gaps: std::sync::Mutex::new(gaps),
            }),
        };
        tokio::spawn(supervise(Arc::downgrade(&broker.inner)));
        Ok(broker)
    }

    /// Declares `topology`, sets its policies and disconnects, with nothing left running:
    /// what `herald migrate` does. Answers the gaps left (see [`policies::apply`]).
    /// RabbitMQ is tried again every second until `wait` has passed, then the last failure
    /// is the answer, rather than waiting forever.
    pub async fn declare(
        topology: &Topology,
        settings: &RabbitMqSettings,
        wait: Duration,
    ) -> Result<Vec<String>, BrokerError> {
        let url_for_logs = redact_url(settings.url.expose_secret());
        let management = management(settings);
        let setup = Setup {
            topology,
            queue_type: queue_type(settings),
            management: &management,
        };
        let deadline = Instant::now() + wait;
        loop {
            match open(settings.url.expose_secret(), &url_for_logs, &setup).await {
                Ok((connection, gaps)) => {
                    let _ = connection.close(200, "topology declared".into()).await;
                    return Ok(gaps);
                }
                Err(e @ BrokerError::Topology { .. }) => return Err(e),
                Err(e) if Instant::now() >= deadline => {
                    return Err(BrokerError::Unavailable(format!(
                        "RabbitMQ at {url_for_logs} did not accept a connection within {wait:?}: {}",
                        cause(&e)
                    )));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "RabbitMQ is not reachable yet; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Herald's policies for `topology` as `rabbitmqctl set_policy` lines, and as a
    /// definitions file, for the virtual host of `settings`' URL.
    pub fn policies(
        topology: &Topology,
        settings: &RabbitMqSettings,
    ) -> (Vec<String>, serde_json::Value) {
        let vhost = settings
            .url
            .expose_secret()
            .parse::<lapin::uri::AMQPUri>()
            .map_or_else(|_| "/".to_owned(), |uri| uri.vhost);
        let policies = policies::policies(topology, queue_type(settings));
        (
            policies::rabbitmqctl_lines(&policies, &vhost),
            policies::definitions(&policies, &vhost),
        )
    }

    /// A channel on the current connection, with the connection's generation: for what
    /// needs RabbitMQ besides the queues (the real-time bus), so that it rides on the one
    /// supervised connection and moves to its replacement (see [`AmqpBroker::replaced`]).
    pub async fn open_channel(&self) -> Result<(Channel, u64), BrokerError> {
        let generation = *self.inner.generation.borrow();
        let channel = self.connection()?.create_channel().await?;
        Ok((channel, generation))
    }

    /// Resolves once the connection of `generation` has been replaced (it was lost, or
    /// stalled and the supervisor gave up on it).
    pub async fn replaced(&self, generation: u64) {
        let mut generations = self.inner.generation.subscribe();
        let _ = generations.wait_for(|g| *g != generation).await;
    }

    /// The live connection, or why there is none.
    fn connection(&self) -> Result<Arc<Connection>, BrokerError> {
        let connection = self
            .inner
            .connection
            .read()
            .expect("connection lock poisoned")
            .clone();
        connection.ok_or_else(|| {
            let trouble = self.inner.trouble.lock().expect("never poisoned").clone();
            BrokerError::Unavailable(format!(
                "not connected ({})",
                trouble.unwrap_or_else(|| format!("connecting to {}", self.inner.url_for_logs))
            ))
        })
    }

    /// A publisher channel, round robin, reopened if it broke or belongs to a replaced
    /// connection.
    async fn publisher(&self) -> Result<Channel, PublishError> {
        let index =
            self.inner.next_publisher.fetch_add(1, Ordering::Relaxed) % self.inner.publishers.len();
        let generation = *self.inner.generation.borrow();
        let mut slot = self.inner.publishers[index].lock().await;
        let usable = slot
            .channel
            .as_ref()
            .is_some_and(|channel| channel.status().connected());
        if slot.generation != generation || !usable {
            let connection = self
                .connection()
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            if connection.status().connected() {
                slot.channel = Some(
                    confirm_channel(&connection)
                        .await
                        .map_err(|e| PublishError::Unavailable(e.to_string()))?,
                );
                slot.generation = generation;
            }
        }
        slot.channel
            .clone()
            .ok_or_else(|| PublishError::Unavailable("RabbitMQ is reconnecting".into()))
    }

    /// Publishes and waits up to `deadline` for the broker's confirmation. While RabbitMQ
    /// has blocked publishing, nothing is sent: the answer is at once, and certain.
    pub(crate) async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        deadline: Duration,
    ) -> Result<(), PublishError> {
        if let Ok(connection) = self.connection()
            && connection.status().blocked()
        {
            return Err(PublishError::Blocked(
                "a RabbitMQ resource alarm is raised".into(),
            ));
        }
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
        match tokio::time::timeout(deadline, confirmed).await {
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
        Ok(self.connection()?.create_channel().await?)
    }

    /// How many messages the named queue holds now.
    async fn message_count(&self, channel: &Channel, queue: &str) -> Result<u64, BrokerError> {
        // Passive: only look; a missing queue is an error, not a new queue.
        let queue = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(u64::from(queue.message_count()))
    }
}

/// What went wrong, without the "broker unavailable" every connection failure says.
fn cause(e: &BrokerError) -> String {
    match e {
        BrokerError::Unavailable(cause) => cause.clone(),
        other => other.to_string(),
    }
}

/// The wait before the next attempt after `failures` failed connects in a row: 1, 2, 4, 8
/// and at most 15 seconds.
fn reconnect_wait(failures: u32) -> Duration {
    const WAITS: [u64; 5] = [1, 2, 4, 8, 15];
    let index = (failures.max(1) - 1).min(4) as usize;
    Duration::from_secs(WAITS[index])
}

/// Keeps a connection for as long as the broker lives: connects when there is none, or
/// when the one there was is lost, logging each failure and the wait before the next
/// attempt.
async fn supervise(inner: std::sync::Weak<Inner>) {
    let mut failures: u32 = 0;
    loop {
        let wait = if failures == 0 {
            // Cheap: a look at the connection's state.
            Duration::from_millis(250)
        } else {
            reconnect_wait(failures)
        };
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Relaxed) {
            return;
        }
        let current = inner
            .connection
            .read()
            .expect("connection lock poisoned")
            .clone();
        if current.as_ref().is_some_and(|c| c.status().connected()) {
            continue;
        }
        if current.is_some() && failures == 0 {
            tracing::warn!(url = %inner.url_for_logs, "the connection to RabbitMQ was lost; reconnecting");
        }
        match open(
            inner.url.expose_secret(),
            &inner.url_for_logs,
            &inner.setup(),
        )
        .await
        {
            Ok((fresh, gaps)) => {
                *inner.gaps.lock().expect("never poisoned") = gaps;
                *inner.connection.write().expect("connection lock poisoned") =
                    Some(Arc::new(fresh));
                *inner.trouble.lock().expect("never poisoned") = None;
                inner.generation.send_modify(|g| *g += 1);
                failures = 0;
                tracing::info!(url = %inner.url_for_logs, "connected to RabbitMQ, topology declared");
                if let Some(lost) = current {
                    tokio::spawn(async move {
                        let _ = lost.close(200, "replaced".into()).await;
                    });
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let next = reconnect_wait(failures);
                tracing::warn!(error = %e, attempt = failures, retry_in = ?next, "RabbitMQ is unreachable; trying again");
                *inner.trouble.lock().expect("never poisoned") = Some(cause(&e));
            }
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
pub(crate) fn header_i64(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    match headers?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// Reads a header as a whole number that fits 32 bits.
pub(crate) fn header_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    header_i64(headers, name).and_then(|n| u32::try_from(n).ok())
}

/// Reads a header as text.
pub(crate) fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The first `x-death` entry, where RabbitMQ records a message it dead-lettered itself
/// (one that expired in its work queue).
fn first_death(headers: Option<&FieldTable>) -> Option<&FieldTable> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    match deaths.as_slice().first()? {
        AMQPValue::FieldTable(first) => Some(first),
        _ => None,
    }
}

/// The routing key a dead letter was first published with: Herald's header, else the one
/// RabbitMQ recorded when it dead-lettered the message, else the key it arrived with.
fn original_routing_key(delivery: &lapin::message::Delivery) -> String {
    let headers = delivery.properties.headers().as_ref();
    header_text(headers, ROUTING_KEY_HEADER)
        .or_else(|| {
            let AMQPValue::FieldArray(keys) = first_death(headers)?.inner().get("routing-keys")?
            else {
                return None;
            };
            match keys.as_slice().first()? {
                AMQPValue::LongString(key) => {
                    Some(String::from_utf8_lossy(key.as_bytes()).into_owned())
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned())
}

/// A delivery's `message_id`.
fn message_id_of(delivery: &lapin::message::Delivery) -> Option<String> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_owned())
}

/// Why a letter was dead-lettered: Herald's header, else RabbitMQ's own reason.
fn dead_reason(headers: Option<&FieldTable>) -> String {
    header_text(headers, REASON_HEADER)
        .or_else(|| header_text(first_death(headers), "reason"))
        .unwrap_or_else(|| "unknown".into())
}

/// Takes the next message of `queue` (with `basic.get`), to be acknowledged or put back.
async fn take(
    channel: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::Delivery>, BrokerError> {
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await?;
    Ok(message.map(|m| m.delivery))
}

/// Hands a message taken with `basic.get` back to its queue, where it was.
async fn put_back(delivery: &lapin::message::Delivery) {
    let _ = delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await;
}

#[async_trait]
impl Broker for AmqpBroker {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn publish(&self, publication: Publication) -> Result<(), PublishError> {
        // Followed past the sender's own timeout: a late confirmation still counts.
        self.publish_confirmed(
            &publication.exchange,
            &publication.routing_key,
            &publication.body,
            persistent(Some(&publication.message_id), FieldTable::default()),
            LATE_CONFIRM_LIMIT,
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
            let Some(delivery) = take(&channel, &dlq).await? else {
                break;
            };
            let headers = delivery.properties.headers().as_ref();
            letters.push(DeadLetter {
                message_id: message_id_of(&delivery),
                routing_key: original_routing_key(&delivery),
                reason: dead_reason(headers),
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
        // default exchange without Herald's dead-letter headers, then acknowledge it. Only
        // the letters there when the replay starts are taken, and each carries the
        // replay's mark: one that fails again and comes back is not taken a second time.
        let channel = self.scratch_channel().await?;
        let dlq = queue.dead_letter_queue();
        let replay = uuid::Uuid::now_v7().to_string();
        let there = self.message_count(&channel, &dlq).await?;
        let mut moved = 0;
        while moved < there.min(limit as u64) {
            let Some(delivery) = take(&channel, &dlq).await? else {
                break;
            };
            let old = delivery.properties.headers().as_ref();
            if header_text(old, REPLAY_HEADER).as_deref() == Some(replay.as_str()) {
                put_back(&delivery).await;
                break;
            }
            let earlier = header_u32(old, EARLIER_ATTEMPTS_HEADER).unwrap_or(0)
                + header_u32(old, ATTEMPTS_HEADER).unwrap_or(0);
            let mut headers = FieldTable::default();
            for (name, value) in old.map(FieldTable::inner).into_iter().flatten() {
                let ours = [
                    ATTEMPTS_HEADER,
                    EARLIER_ATTEMPTS_HEADER,
                    REASON_HEADER,
                    LAST_ERROR_HEADER,
                    DUE_HEADER,
                    REPLAY_HEADER,
                    "x-death",
                ];
                if !ours.contains(&name.as_str()) {
                    headers.insert(name.clone(), value.clone());
                }
            }
            headers.insert(
                ROUTING_KEY_HEADER.into(),
                AMQPValue::LongString(original_routing_key(&delivery).into()),
            );
            headers.insert(
                EARLIER_ATTEMPTS_HEADER.into(),
                AMQPValue::LongLongInt(i64::from(earlier)),
            );
            headers.insert(
                REPLAY_HEADER.into(),
                AMQPValue::LongString(replay.as_str().into()),
            );
            let message_id = message_id_of(&delivery);
            let republished = self
                .publish_confirmed(
                    "",
                    &queue.name,
                    &delivery.data,
                    persistent(message_id.as_deref(), headers),
                    self.inner.publish_timeout,
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

    async fn trim_dead_letters(
        &self,
        queue: &QueueSpec,
    ) -> Result<Vec<DroppedLetter>, BrokerError> {
        // Look at the head: drop it while the queue is over its length or the head is
        // past its age, and put the first letter that is neither back where it was.
        let channel = self.scratch_channel().await?;
        let dlq = queue.dead_letter_queue();
        let mut count = self.message_count(&channel, &dlq).await?;
        let max_age = i64::try_from(queue.dead_letter_max_age.as_secs()).unwrap_or(i64::MAX);
        let dead_before = consumer::now_ms() / 1000 - max_age;
        let mut dropped = Vec::new();
        while count > 0 {
            let Some(delivery) = take(&channel, &dlq).await? else {
                break;
            };
            let headers = delivery.properties.headers().as_ref();
            // Herald stamps the letters it dead-letters; RabbitMQ records when it
            // dead-lettered one that expired.
            let dead_at = header_i64(first_death(headers), "time")
                .or_else(|| {
                    delivery
                        .properties
                        .timestamp()
                        .and_then(|t| i64::try_from(t).ok())
                })
                .unwrap_or(i64::MAX);
            let bound = if count > queue.dead_letter_max_length {
                "length"
            } else if dead_at < dead_before {
                "age"
            } else {
                put_back(&delivery).await;
                break;
            };
            dropped.push(DroppedLetter {
                message_id: message_id_of(&delivery),
                reason: dead_reason(headers),
                bound,
            });
            delivery
                .acker
                .ack(lapin::options::BasicAckOptions { multiple: false })
                .await?;
            count -= 1;
        }
        let _ = channel.close(200, "trimmed".into()).await;
        Ok(dropped)
    }

    async fn health(&self) -> BrokerHealth {
        let unhealthy = |detail: String| BrokerHealth {
            healthy: false,
            broker: "rabbitmq",
            detail,
        };
        let connection = match self.connection() {
            Ok(connection) => connection,
            Err(e) => return unhealthy(e.to_string()),
        };
        let status = connection.status();
        if status.blocked() {
            return unhealthy(
                "RabbitMQ has blocked publishing (a resource alarm is raised)".into(),
            );
        }
        if !status.connected() {
            return unhealthy(format!(
                "reconnecting to {} (the connection was lost)",
                self.inner.url_for_logs
            ));
        }
        let gaps = self.inner.gaps.lock().expect("never poisoned").clone();
        let mut detail = format!("connected to {}", self.inner.url_for_logs);
        for gap in gaps {
            detail.push_str("; ");
            detail.push_str(&gap);
        }
        BrokerHealth {
            healthy: true,
            broker: "rabbitmq",
            detail,
        }
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        if let Ok(connection) = self.connection() {
            let _ = connection.close(200, "herald shutting down".into()).await;
        }
    }
}
