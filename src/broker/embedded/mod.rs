//! The embedded broker: durable queues in a SQLite file, for running with no setup.
//!
//! Every change goes through one writer task that commits whatever has piled up in one
//! transaction (group commit), so many concurrent publishes share one fsync. A publish is
//! answered only after its commit: an accepted event survives a crash. Leases on delivered
//! messages live in memory; after a crash every message still in the file is delivered
//! again, and a lease that runs out makes its message deliverable to another worker.
//!
//! One process owns the file at a time (a lock file enforces it); to run several Herald
//! processes, use RabbitMQ.

mod consumer;
mod writer;

use super::{
    Broker, BrokerError, BrokerHealth, Consumer, DeadLetter, DroppedLetter, Publication,
    PublishError, QueueSpec, QueueStats, Topology,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc, oneshot};
use writer::{NewMessage, Write};

/// The embedded broker, as configured (`broker.embedded.*`): nothing to check, so it is
/// read as it is.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSettings {
    /// Its SQLite file.
    pub path: PathBuf,
    /// How long a worker may hold a message before it is delivered again.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// How often idle consumers look for retries that came due.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

/// The broker's schema, applied when the broker opens its file.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/embedded-broker");

/// Milliseconds since the epoch, the broker's clock in the database.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A worker's hold on a message it was handed.
#[derive(Debug, Clone, Copy)]
struct Lease {
    token: u64,
    deadline: Instant,
}

/// What the broker knows of one queue in memory.
#[derive(Debug, Default)]
struct QueueState {
    /// Messages in the queue, handed out or not; the writer keeps it exact.
    depth: u64,
    /// The most the queue holds; `None` for dead-letter queues, which refuse nothing.
    max_length: Option<u64>,
    /// Messages handed to workers and not yet settled.
    leases: HashMap<i64, Lease>,
    /// Messages whose lease ran out: they are flagged as redelivered when handed out again.
    lapsed: HashSet<i64>,
    consumers: u64,
    /// Woken when messages arrive.
    arrivals: Arc<Notify>,
}

/// State shared by the broker handle, its consumers and its writer.
struct Shared {
    queues: std::sync::Mutex<HashMap<String, QueueState>>,
    next_token: AtomicU64,
}

impl Shared {
    fn with_queue<T>(&self, queue: &str, f: impl FnOnce(&mut QueueState) -> T) -> T {
        let mut queues = self.queues.lock().expect("queue state lock poisoned");
        f(queues.entry(queue.to_owned()).or_default())
    }
}

struct Inner {
    topology: Topology,
    settings: EmbeddedSettings,
    writes: mpsc::Sender<Write>,
    reads: SqlitePool,
    shared: Arc<Shared>,
    /// Held for the broker's life: the OS releases it if the process dies.
    _lock: File,
}

/// The broker's file, created if missing, locked for this process and migrated: the lock
/// (held for as long as the file is in use), the options to open more connections with,
/// and the connection that migrated it.
async fn migrated(
    settings: &EmbeddedSettings,
) -> Result<(File, SqliteConnectOptions, SqliteConnection), BrokerError> {
    if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| unavailable("creating its directory", e))?;
    }
    let lock_path = settings.path.with_extension("lock");
    let lock = File::create(&lock_path).map_err(|e| unavailable("creating its lock file", e))?;
    lock.try_lock().map_err(|_| {
        BrokerError::Unavailable(format!(
            "the embedded broker at {} is in use by another Herald process; \
             run several processes on RabbitMQ instead",
            settings.path.display()
        ))
    })?;
    let options = SqliteConnectOptions::new()
        .filename(&settings.path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk before a publish is answered, even if the machine
        // loses power, not only if the process dies.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5));
    let mut connection = options.clone().connect().await?;
    MIGRATOR
        .run(&mut connection)
        .await
        .map_err(|e| BrokerError::Unavailable(format!("migrating the embedded broker: {e}")))?;
    Ok((lock, options, connection))
}

/// The embedded broker; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
}

impl EmbeddedBroker {
    /// Creates the broker's file (and directory) if missing and applies its schema, with
    /// nothing left running: what `herald migrate` does.
    pub async fn migrate(settings: &EmbeddedSettings) -> Result<(), BrokerError> {
        let (_lock, _, connection) = migrated(settings).await?;
        let _ = connection.close().await;
        Ok(())
    }

    /// Opens (or creates) the broker's file and starts its writer and expiry sweep.
    pub async fn open(topology: Topology, settings: EmbeddedSettings) -> Result<Self, BrokerError> {
        let (lock, options, writer_connection) = migrated(&settings).await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;

        let shared = Arc::new(Shared {
            queues: std::sync::Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        });
        let depths =
            sqlx::query("SELECT queue, COUNT(*) AS depth FROM broker_messages GROUP BY queue")
                .fetch_all(&reads)
                .await?;
        for row in depths {
            let queue: String = row.get("queue");
            let depth: i64 = row.get("depth");
            shared.with_queue(&queue, |q| q.depth = depth as u64);
        }
        for spec in &topology.queues {
            shared.with_queue(&spec.name, |q| {
                q.max_length = Some(u64::from(spec.max_length.get()))
            });
        }

        let (writes, queued_writes) = mpsc::channel(4096);
        tokio::spawn(writer::run(
            writer::WriterConnection::new(writer_connection),
            queued_writes,
            shared.clone(),
        ));
        let broker = EmbeddedBroker {
            inner: Arc::new(Inner {
                topology,
                settings,
                writes,
                reads,
                shared,
                _lock: lock,
            }),
        };
        tokio::spawn(expiry_sweep(Arc::downgrade(&broker.inner)));
        Ok(broker)
    }

    /// Sends one change to the writer and waits for its commit.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Write,
    ) -> Result<T, BrokerError> {
        write(&self.inner.writes, make).await
    }
}

async fn write<T>(
    writes: &mpsc::Sender<Write>,
    make: impl FnOnce(oneshot::Sender<T>) -> Write,
) -> Result<T, BrokerError> {
    let (reply, answer) = oneshot::channel();
    writes
        .send(make(reply))
        .await
        .map_err(|_| BrokerError::Unavailable("the embedded broker's writer has stopped".into()))?;
    answer
        .await
        .map_err(|_| BrokerError::Unavailable("the embedded broker's writer has stopped".into()))
}

fn unavailable(what: &str, e: std::io::Error) -> BrokerError {
    BrokerError::Unavailable(format!("embedded broker: {what}: {e}"))
}

/// Moves expired messages to their dead-letter queues, once a second, for as long as the
/// broker lives.
async fn expiry_sweep(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let queues: Vec<(String, String)> = inner
            .topology
            .queues
            .iter()
            .map(|q| (q.name.clone(), q.dead_letter_queue()))
            .collect();
        let result = write(&inner.writes, |reply| Write::Expire {
            now_ms: now_ms(),
            queues,
            reply,
        })
        .await;
        if let Ok(Err(e)) | Err(e) = result.map(|r| r.map(|_| ())) {
            tracing::warn!(error = %e, "embedded broker: expiring messages failed");
        }
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn publish(&self, publication: Publication) -> Result<(), PublishError> {
        self.publish_all(vec![publication])
            .await
            .pop()
            .expect("one result per publication")
    }

    /// The publications are committed together, in one transaction of their own within
    /// the group commit: all are queued or none.
    async fn publish_all(&self, publications: Vec<Publication>) -> Vec<Result<(), PublishError>> {
        let count = publications.len();
        let now = now_ms();
        let mut rows = Vec::with_capacity(count);
        for p in publications {
            let mut routed = self
                .inner
                .topology
                .route(&p.exchange, &p.routing_key)
                .peekable();
            if routed.peek().is_none() {
                let error = PublishError::Unroutable {
                    exchange: p.exchange.clone(),
                    routing_key: p.routing_key.clone(),
                };
                return vec![Err(error); count];
            }
            for queue in routed {
                rows.push(NewMessage {
                    queue: queue.name.clone(),
                    routing_key: p.routing_key.clone(),
                    message_id: p.message_id.clone(),
                    body: p.body.clone(),
                    published_ms: now,
                    expires_ms: now.saturating_add(millis(queue.message_ttl)),
                });
            }
        }
        let result = match self.write(|reply| Write::Publish { rows, reply }).await {
            Ok(result) => result,
            Err(e) => Err(PublishError::Unavailable(e.to_string())),
        };
        vec![result; count]
    }

    async fn consume(
        &self,
        queue: &QueueSpec,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        Ok(Box::new(consumer::EmbeddedConsumer::new(
            self.clone(),
            queue.clone(),
            prefetch,
        )))
    }

    async fn queue_stats(&self, queue_name: &str) -> Result<QueueStats, BrokerError> {
        Ok(self.inner.shared.with_queue(queue_name, |q| QueueStats {
            message_count: q.depth,
            consumer_count: q.consumers,
        }))
    }

    async fn dead_letters(
        &self,
        queue: &QueueSpec,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let rows = sqlx::query(
            "SELECT message_id, routing_key, dead_reason, last_error, attempts, body \
             FROM broker_messages WHERE queue = ? ORDER BY id LIMIT ?",
        )
        .bind(queue.dead_letter_queue())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.reads)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| DeadLetter {
                message_id: row.get("message_id"),
                routing_key: row.get("routing_key"),
                reason: row
                    .get::<Option<String>, _>("dead_reason")
                    .unwrap_or_else(|| "unknown".into()),
                last_error: row.get("last_error"),
                attempts: row.get::<i64, _>("attempts") as u32,
                body: bytes::Bytes::from(row.get::<Vec<u8>, _>("body")),
            })
            .collect())
    }

    async fn replay_dead_letters(
        &self,
        queue: &QueueSpec,
        limit: usize,
    ) -> Result<u64, BrokerError> {
        self.write(|reply| Write::Replay {
            queue: queue.name.clone(),
            dead_letter_queue: queue.dead_letter_queue(),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            now_ms: now_ms(),
            ttl_ms: millis(queue.message_ttl),
            reply,
        })
        .await?
    }

    async fn trim_dead_letters(
        &self,
        queue: &QueueSpec,
    ) -> Result<Vec<DroppedLetter>, BrokerError> {
        self.write(|reply| Write::Trim {
            dead_letter_queue: queue.dead_letter_queue(),
            max_length: queue.dead_letter_max_length,
            dead_before_ms: now_ms().saturating_sub(millis(queue.dead_letter_max_age)),
            reply,
        })
        .await?
    }

    async fn health(&self) -> BrokerHealth {
        let healthy = !self.inner.writes.is_closed();
        BrokerHealth {
            healthy,
            broker: "embedded",
            detail: if healthy {
                format!("queues in {}", self.inner.settings.path.display())
            } else {
                "the embedded broker's writer has stopped".into()
            },
        }
    }

    async fn close(&self) {
        self.inner.reads.close().await;
    }
}

impl EmbeddedBroker {
    fn next_token(&self) -> u64 {
        self.inner.shared.next_token.fetch_add(1, Ordering::Relaxed)
    }
}
