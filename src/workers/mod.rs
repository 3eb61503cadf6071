//! Worker pools: per queue, consume with bounded concurrency, hand each message to its
//! handler, and settle it by its one [`Outcome`] only after the outcome is recorded.
//!
//! Before a handler sees an event, the pool checks that its tenant exists (an event for
//! an unknown tenant is rejected: nothing sent, nothing stored), and a handler that
//! panics is caught: its message is retried like any transient failure.
//!
//! [`WorkerPool::process`] handles one delivery start to finish and is what tests step;
//! [`WorkerPool::run`] is the loop around it, with shutdown that stops taking work and
//! drains what is in flight.
//!
//! Outcomes are reported to an [`OutcomeSink`] (the delivery ledger, in Herald) that the
//! pool is given: the pool knows nothing of where they are kept.

pub use crate::outcome::{DeliveryOutcome, Outcome, Report};

use crate::broker::{Broker, BrokerError, DeadLetterReason, Delivery, QueueSpec};
use crate::domain::{Envelope, EnvelopeError, EventKind, NotificationId, TenantId, WireProperties};
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, QueueLabels, QueueOutcomeLabels};
use crate::tenants::Tenancy;
use async_trait::async_trait;
use chrono::Utc;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
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

/// Where a pool reports what became of each message, before it settles it.
#[async_trait]
pub trait OutcomeSink: Send + Sync + 'static {
    /// Records the outcome of an attempt at `envelope`; the message is settled once this
    /// returns, so that a crash in between repeats the attempt rather than lose it.
    async fn outcome(&self, envelope: &Envelope, attempt: u32, outcome: &Outcome);

    /// Records that a message which could not be read as an event was rejected.
    async fn rejected(&self, rejection: &Rejection, reason: &str);
}

/// What is known of a message that was rejected before it could be read as an event.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Its id.
    pub id: NotificationId,
    /// The tenant it names.
    pub tenant: TenantId,
    /// The kind it was read as.
    pub kind: EventKind,
    /// When it was published.
    pub created_at: chrono::DateTime<Utc>,
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
    outcomes: Option<Arc<dyn OutcomeSink>>,
    tenancy: Option<Arc<Tenancy>>,
    /// The tenant of messages that name none.
    default_tenant: Option<TenantId>,
    /// How often the queue's dead letters are kept within their bounds, if they are.
    dead_letter_check: Option<Duration>,
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
            outcomes: None,
            tenancy: None,
            default_tenant: None,
            dead_letter_check: None,
        }
    }

    /// Keeps the queue's dead letters within their bounds, checking `every` so often.
    pub fn with_dead_letter_bounds(mut self, every: Duration) -> Self {
        self.dead_letter_check = Some(every);
        self
    }

    /// Reports every outcome to `sink` before settling.
    pub fn with_outcome_sink(mut self, sink: Arc<dyn OutcomeSink>) -> Self {
        self.outcomes = Some(sink);
        self
    }

    /// Rejects events whose tenant `tenancy` does not know.
    pub fn with_tenancy(mut self, tenancy: Arc<Tenancy>) -> Self {
        self.tenancy = Some(tenancy);
        self
    }

    /// Reads messages that name no tenant as `tenant`'s (`broker.default_tenant`).
    pub fn with_default_tenant(mut self, tenant: Option<TenantId>) -> Self {
        self.default_tenant = tenant;
        self
    }

    /// Consumes until `shutdown`, then waits up to `grace` for in-flight messages. What is
    /// still unsettled after that is redelivered by the broker.
    pub async fn run(self, shutdown: Shutdown, grace: Duration) {
        let keeping = self
            .dead_letter_check
            .map(|every| tokio::spawn(self.clone().keep_dead_letters(every, shutdown.clone())));
        let permits = Arc::new(Semaphore::new(self.spec.concurrency.get()));
        let prefetch = u16::try_from(self.spec.concurrency.get()).unwrap_or(u16::MAX);
        let mut in_flight = JoinSet::new();
        let mut ordering = Ordering::default();
        // Since when the queue cannot be consumed: said once, not every second.
        let mut failing_since: Option<Instant> = None;
        'consuming: while !shutdown.is_raised() {
            let mut consumer = match self.broker.consume(&self.spec, prefetch).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::warn!(queue = %self.spec.configured_name, error = %e, "cannot consume; trying again every second");
                    }
                    failing_since.get_or_insert_with(Instant::now);
                    tokio::select! {
                        _ = shutdown.raised() => break,
                        _ = tokio::time::sleep(RECONSUME_DELAY) => continue,
                    }
                }
            };
            match failing_since.take() {
                Some(since) => {
                    tracing::info!(queue = %self.spec.configured_name, after = ?since.elapsed(), "worker pool consuming again")
                }
                None => {
                    tracing::info!(queue = %self.spec.configured_name, concurrency = self.spec.concurrency, "worker pool consuming")
                }
            }
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
                        // Read here, once: the order key comes from the envelope. Copies
                        // of an event that may have been published twice go one after the
                        // other, so that the second finds what the first did.
                        let envelope =
                            read(&delivery, self.spec.kind, self.default_tenant.as_ref());
                        let key = envelope.as_ref().ok().and_then(|e| {
                            self.handler
                                .order_key(e)
                                .or_else(|| e.deduplicate.then(|| e.id.to_string()))
                        });
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
        while in_flight.try_join_next().is_some() {}
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
        if let Some(keeping) = keeping {
            let _ = keeping.await;
        }
    }

    /// Drops the dead letters past their queue's bounds every `every`, until shutdown:
    /// each one logged with its id and reason, and counted.
    async fn keep_dead_letters(self, every: Duration, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.raised() => return,
            }
            let dropped = match self.broker.trim_dead_letters(&self.spec).await {
                Ok(dropped) => dropped,
                Err(e) => {
                    tracing::warn!(queue = %self.spec.configured_name, error = %e, "keeping the dead letters within bounds failed");
                    continue;
                }
            };
            for letter in &dropped {
                tracing::warn!(
                    queue = %self.spec.configured_name,
                    id = letter.message_id.as_deref().unwrap_or("-"),
                    reason = %letter.reason,
                    bound = letter.bound,
                    "dead letter dropped: its queue is over its bounds"
                );
                self.metrics
                    .dead_letters_dropped
                    .get_or_create(&crate::telemetry::DroppedLabels {
                        queue: self.spec.configured_name.clone(),
                        bound: letter.bound.to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// Handles one delivery to its outcome and settles it. Returns the outcome.
    pub async fn process(&self, delivery: Delivery) -> Outcome {
        let envelope = read(&delivery, self.spec.kind, self.default_tenant.as_ref());
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
        // The attempt as the ledger and the handler count it: every attempt, including
        // those before the message was replayed from its dead-letter queue.
        let attempt = delivery.earlier_attempts.saturating_add(delivery.attempt);
        let outcome = match envelope {
            Ok(envelope) => {
                let span = tracing::Span::current();
                span.record("id", tracing::field::display(envelope.id));
                span.record(
                    "tenant",
                    tracing::field::display(envelope.event.tenant_id()),
                );
                match self.tenant_known(envelope.event.tenant_id()).await {
                    Ok(true) => {
                        let outcome = self.decide(&envelope, attempt).await;
                        let outcome = self.within_attempts(outcome, delivery.attempt);
                        // Recorded before the message is settled: a crash in between
                        // repeats the attempt, never loses its outcome.
                        if let Some(outcomes) = &self.outcomes {
                            outcomes.outcome(&envelope, attempt, &outcome).await;
                        }
                        outcome
                    }
                    // Nothing is stored for a tenant that does not exist, the ledger
                    // included: no one could read it.
                    Ok(false) => {
                        tracing::warn!("event for an unknown tenant; rejected");
                        Outcome::Rejected {
                            reason: format!("unknown tenant '{}'", envelope.event.tenant_id()),
                        }
                    }
                    // The store is down, not the event wrong: tried again, however
                    // many attempts it takes.
                    Err(e) => Outcome::retry(format!("checking the tenant: {e}")),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable message");
                let reason = match e {
                    // Readable, but not Herald's to handle: the reason says so by name.
                    EnvelopeError::NoHandler(_) => e.to_string(),
                    _ => format!("unreadable message: {e}"),
                };
                self.record_rejection(&e, &reason).await;
                Outcome::Rejected { reason }
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
        if let Err(e) = self.settle(delivery, &outcome).await {
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

    /// Whether `tenant` exists (always, without a tenancy to ask).
    async fn tenant_known(&self, tenant: &TenantId) -> Result<bool, crate::store::StoreError> {
        match &self.tenancy {
            Some(tenancy) => tenancy.exists(tenant).await,
            None => Ok(true),
        }
    }

    /// Records an unreadable message in its tenant's ledger, when it names a tenant that
    /// exists, so that its publisher can see why it went nowhere.
    async fn record_rejection(&self, error: &EnvelopeError, reason: &str) {
        let EnvelopeError::InvalidPayload {
            kind,
            id,
            tenant: Some(tenant),
            created_at,
            ..
        } = error
        else {
            return;
        };
        let Some(outcomes) = &self.outcomes else {
            return;
        };
        let rejection = Rejection {
            id: *id,
            tenant: tenant.clone(),
            kind: *kind,
            created_at: *created_at,
        };
        if self.tenant_known(tenant).await.unwrap_or(false) {
            outcomes.rejected(&rejection, reason).await;
        }
    }

    /// Runs the handler on the envelope, bounded by the handler timeout; a panic in the
    /// handler is a transient failure.
    async fn decide(&self, envelope: &Envelope, attempt: u32) -> Outcome {
        let age = Utc::now().signed_duration_since(envelope.created_at);
        if age.to_std().is_ok_and(|age| age > self.spec.message_ttl) {
            return Outcome::Expired;
        }
        let handled = AssertUnwindSafe(self.handler.handle(envelope, attempt)).catch_unwind();
        match tokio::time::timeout(self.handler_timeout, handled).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                tracing::error!(id = %envelope.id, panic = %message, "the handler panicked; the message will be retried");
                Outcome::retry(format!("the handler panicked: {message}"))
            }
            Err(_) => Outcome::retry(format!(
                "the handler took longer than {:?}",
                self.handler_timeout
            )),
        }
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

    /// Settles by the outcome.
    async fn settle(&self, delivery: Delivery, outcome: &Outcome) -> Result<(), BrokerError> {
        match outcome {
            Outcome::PerDelivery(report) => {
                Box::pin(self.settle(delivery, &report.settlement())).await
            }
            Outcome::Delivered => delivery.ack().await,
            Outcome::Undeliverable { reason } => {
                tracing::info!(reason = %reason, "nothing to deliver to");
                delivery.ack().await
            }
            Outcome::Retry { error, after } => {
                let delay = after.unwrap_or_else(|| self.spec.retry_delay(delivery.attempt + 1));
                tracing::info!(error = %error, ?delay, "retrying later");
                delivery.retry(delay, error).await
            }
            Outcome::Failed { error } => {
                tracing::warn!(error = %error, "failed for good; dead-lettered");
                delivery
                    .dead_letter(DeadLetterReason::Failed, Some(error))
                    .await
            }
            Outcome::Rejected { reason } => {
                delivery
                    .dead_letter(DeadLetterReason::Rejected, Some(reason))
                    .await
            }
            Outcome::Expired => {
                tracing::warn!("expired; dead-lettered");
                delivery.dead_letter(DeadLetterReason::Expired, None).await
            }
        }
    }
}

/// Reads a delivery of the queue of `kind`; one that names no tenant is `default_tenant`'s.
fn read(
    delivery: &Delivery,
    kind: EventKind,
    default_tenant: Option<&TenantId>,
) -> Result<Envelope, EnvelopeError> {
    let properties = WireProperties {
        message_id: delivery.message_id.as_deref(),
        timestamp: delivery.timestamp,
        default_tenant,
    };
    Envelope::from_wire(&delivery.body, &delivery.routing_key, kind, properties)
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
