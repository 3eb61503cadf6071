//! Worker pools: per queue, consume with bounded concurrency, hand each message to its
//! handler, and settle it by its one [`Outcome`] only after the outcome is recorded.
//!
//! [`WorkerPool::process`] handles one delivery start to finish and is what tests step;
//! [`WorkerPool::run`] is the loop around it, with shutdown that stops taking work and
//! drains what is in flight.

mod handlers;
mod outcome;

pub use handlers::LogHandler;
pub use outcome::{DeliveryOutcome, Outcome, RenderedFrom, Report};

use crate::broker::{Broker, BrokerError, DeadLetterReason, Delivery, QueueSpec};
use crate::domain::{Envelope, EnvelopeError, WireProperties};
use crate::ledger::Ledger;
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, QueueLabels, QueueOutcomeLabels};
use async_trait::async_trait;
use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Handles the events of one queue.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one event; `attempt` is 1 the first time.
    async fn handle(&self, envelope: &Envelope, attempt: u32) -> Outcome;

    /// Events with the same key are handled one at a time, in the order the queue hands
    /// them over (a chat conversation's messages); `None`, the default, for none.
    fn order_key(&self, _envelope: &Envelope) -> Option<String> {
        None
    }
}

/// How long one pool waits between attempts to reach its queue.
const RECONSUME_DELAY: Duration = Duration::from_secs(1);

/// One queue's pool of workers.
#[derive(Clone)]
pub struct WorkerPool {
    spec: QueueSpec,
    broker: Arc<dyn Broker>,
    handler: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
    handler_timeout: Duration,
    ledger: Option<Ledger>,
}

impl WorkerPool {
    /// A pool for `spec`'s queue.
    pub fn new(
        spec: QueueSpec,
        broker: Arc<dyn Broker>,
        handler: Arc<dyn Handler>,
        metrics: Arc<Metrics>,
        handler_timeout: Duration,
    ) -> Self {
        WorkerPool {
            spec,
            broker,
            handler,
            metrics,
            handler_timeout,
            ledger: None,
        }
    }

    /// Records every outcome in `ledger` before settling.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Consumes until `shutdown`, then waits up to `grace` for in-flight messages. What is
    /// still unsettled after that is redelivered by the broker.
    pub async fn run(self, shutdown: Shutdown, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.spec.concurrency));
        let prefetch = u16::try_from(self.spec.concurrency).unwrap_or(u16::MAX);
        let mut in_flight = JoinSet::new();
        let mut ordering = Ordering::default();
        'consuming: while !shutdown.is_raised() {
            let mut consumer = match self.broker.consume(&self.spec, prefetch).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    tracing::warn!(queue = %self.spec.configured_name, error = %e, "cannot consume; trying again");
                    tokio::select! {
                        _ = shutdown.raised() => break,
                        _ = tokio::time::sleep(RECONSUME_DELAY) => continue,
                    }
                }
            };
            tracing::info!(queue = %self.spec.configured_name, concurrency = self.spec.concurrency, "worker pool consuming");
            loop {
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = shutdown.raised() => { consumer.cancel().await; break 'consuming; }
                };
                let delivery = tokio::select! {
                    delivery = consumer.next() => delivery,
                    _ = shutdown.raised() => { consumer.cancel().await; break 'consuming; }
                };
                match delivery {
                    Some(Ok(delivery)) => {
                        let pool = self.clone();
                        // Read here, once: the order key comes from the envelope.
                        let envelope = read(&delivery);
                        let key = envelope
                            .as_ref()
                            .ok()
                            .and_then(|e| self.handler.order_key(e));
                        let (before, done) = ordering.next(key);
                        in_flight.spawn(async move {
                            if let Some(before) = before {
                                // The key's earlier event first; its outcome does not matter.
                                let _ = before.await;
                            }
                            pool.process_read(delivery, envelope).await;
                            drop(done);
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(queue = %self.spec.configured_name, error = %e, "consuming failed");
                        tokio::time::sleep(RECONSUME_DELAY).await;
                    }
                    None => {
                        tracing::warn!(queue = %self.spec.configured_name, "the broker ended the consumer; consuming again");
                        break;
                    }
                }
                while in_flight.try_join_next().is_some() {}
            }
        }
        let draining = in_flight.len();
        if draining > 0 {
            tracing::info!(queue = %self.spec.configured_name, draining, "draining in-flight messages");
        }
        if tokio::time::timeout(grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(queue = %self.spec.configured_name, left = in_flight.len(), "grace period over; unsettled messages will be redelivered");
        }
    }

    /// Handles one delivery to its outcome and settles it. Returns the outcome.
    pub async fn process(&self, delivery: Delivery) -> Outcome {
        let envelope = read(&delivery);
        self.process_read(delivery, envelope).await
    }

    /// [`WorkerPool::process`] for a delivery already read into `envelope`.
    #[tracing::instrument(skip_all, fields(queue = %self.spec.configured_name, id, tenant, attempt = delivery.attempt))]
    async fn process_read(
        &self,
        delivery: Delivery,
        envelope: Result<Envelope, EnvelopeError>,
    ) -> Outcome {
        let started = Instant::now();
        let (outcome, failure) = match envelope {
            Ok(envelope) => {
                let (envelope, outcome) = self.decide(envelope, delivery.attempt).await;
                let outcome = self.within_attempts(outcome, delivery.attempt);
                // Recorded before the message is settled: a crash in between repeats the
                // attempt, never loses its outcome.
                if let Some(ledger) = &self.ledger {
                    ledger.outcome(&envelope, delivery.attempt, &outcome).await;
                }
                (outcome, DeadLetterReason::Failed)
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable message");
                (
                    Outcome::failed(format!("unreadable message: {e}")),
                    DeadLetterReason::Rejected,
                )
            }
        };
        self.metrics
            .handled
            .get_or_create(&QueueOutcomeLabels {
                queue: self.spec.configured_name.clone(),
                outcome: outcome.label().to_owned(),
            })
            .inc();
        self.metrics
            .handler_seconds
            .get_or_create(&QueueLabels {
                queue: self.spec.configured_name.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = self.settle(delivery, &outcome, failure).await {
            // The broker will deliver the message again; the handler must be idempotent.
            match e {
                BrokerError::LeaseLost(_) => tracing::warn!(error = %e, "settling failed"),
                _ => {
                    tracing::error!(error = %e, "settling failed; the message will be delivered again")
                }
            }
        }
        outcome
    }

    /// Runs the handler on the envelope, bounded by the handler timeout.
    async fn decide(&self, envelope: Envelope, attempt: u32) -> (Envelope, Outcome) {
        let span = tracing::Span::current();
        span.record("id", tracing::field::display(envelope.id));
        span.record(
            "tenant",
            tracing::field::display(envelope.event.tenant_id()),
        );
        let age = Utc::now().signed_duration_since(envelope.created_at);
        if age.to_std().is_ok_and(|age| age > self.spec.message_ttl) {
            return (envelope, Outcome::Expired);
        }
        let handled = self.handler.handle(&envelope, attempt);
        let outcome = match tokio::time::timeout(self.handler_timeout, handled).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::retry(format!(
                "the handler took longer than {:?}",
                self.handler_timeout
            )),
        };
        (envelope, outcome)
    }

    /// A retry on the last allowed attempt becomes a final failure.
    fn within_attempts(&self, outcome: Outcome, attempt: u32) -> Outcome {
        match outcome {
            Outcome::Retry { error, .. } if attempt >= self.spec.max_attempts => Outcome::Failed {
                error: format!("gave up after {attempt} attempts: {error}"),
            },
            Outcome::PerDelivery(mut report) => {
                for delivery in &mut report.deliveries {
                    let outcome = std::mem::replace(&mut delivery.outcome, Outcome::Delivered);
                    delivery.outcome = self.within_attempts(outcome, attempt);
                }
                Outcome::PerDelivery(report)
            }
            other => other,
        }
    }

    /// Settles by the outcome; a failure is dead-lettered with `failure` as its reason.
    async fn settle(
        &self,
        delivery: Delivery,
        outcome: &Outcome,
        failure: DeadLetterReason,
    ) -> Result<(), BrokerError> {
        match outcome {
            Outcome::PerDelivery(report) => {
                Box::pin(self.settle(delivery, &report.settlement(), failure)).await
            }
            Outcome::Delivered => delivery.ack().await,
            Outcome::Retry { error, after } => {
                let delay = after.unwrap_or_else(|| self.spec.retry_delay(delivery.attempt + 1));
                tracing::info!(error = %error, ?delay, "retrying later");
                delivery.retry(delay, error).await
            }
            Outcome::Failed { error } => {
                tracing::warn!(error = %error, "failed for good; dead-lettered");
                delivery.dead_letter(failure, Some(error)).await
            }
            Outcome::Expired => {
                tracing::warn!("expired; dead-lettered");
                delivery.dead_letter(DeadLetterReason::Expired, None).await
            }
        }
    }
}

/// Reads a delivery's envelope.
fn read(delivery: &Delivery) -> Result<Envelope, EnvelopeError> {
    let properties = WireProperties {
        message_id: delivery.message_id.as_deref(),
        timestamp: delivery.timestamp,
    };
    Envelope::from_wire(&delivery.body, &delivery.routing_key, properties)
}

/// Chains the events of each order key: each waits for the one before it with its key.
#[derive(Default)]
struct Ordering {
    /// Per key, a receiver that completes when the key's latest event is done.
    tails: std::collections::HashMap<String, tokio::sync::oneshot::Receiver<()>>,
}

impl Ordering {
    /// For an event with `key`: what to wait for first, and the sender to drop when done.
    fn next(
        &mut self,
        key: Option<String>,
    ) -> (
        Option<tokio::sync::oneshot::Receiver<()>>,
        Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let Some(key) = key else {
            return (None, None);
        };
        // Keys whose events are all done are forgotten, so that the map stays small.
        if self.tails.len() > 4096 {
            self.tails.retain(|_, tail| {
                matches!(
                    tail.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                )
            });
        }
        let (done, tail) = tokio::sync::oneshot::channel();
        (self.tails.insert(key, tail), Some(done))
    }
}
