//! Ingress: how an event becomes accepted. The HTTP handlers parse and authenticate; this
//! module admits the tenant's events under its rate limit, binds them to their idempotency
//! key, publishes them, records their acceptance in the ledger and answers.
//!
//! What an answer means is kept exact:
//! - 202: every event is durably queued and its acceptance is written (while the broker
//!   confirms, and withdrawn for what it did not take), so that the `Location` answers at
//!   once from any instance sharing the store.
//! - 503 before publishing (the broker has blocked publishing, or is unreachable): nothing
//!   is queued.
//! - 503 after the broker did not confirm within `broker.publish_timeout`: the event may
//!   still be queued, and the answer says so with its id. The publish is followed to its
//!   end in the background: a late confirmation records the acceptance (and completes the
//!   idempotency key), so that its `Location` tells the truth afterwards. A repeat with the
//!   same idempotency key publishes the same envelope, under the same id, and consumers
//!   deduplicate by id: one key never sends an event twice.

use crate::broker::{Broker, Publication, PublishError, Topology};
use crate::domain::{Envelope, Event, NotificationId, TenantId};
use crate::idempotency::{Begin, Idempotency, IdempotencyError};
use crate::ledger::Ledger;
use crate::store::KeyBinding;
use crate::telemetry::{Metrics, QueueLabels};
use crate::tenants::limits::{RateLimits, Refusal};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;

/// The answer to an accepted event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Herald's id for the event; its status is at `/v1/notifications/{id}`.
    #[schema(value_type = String, format = Uuid)]
    pub id: NotificationId,
    /// Always `queued`: the event is durably queued.
    pub status: &'static str,
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    /// One entry per event, in the order sent.
    pub results: Vec<Accepted>,
}

/// What is sent: one event, or a batch (answered with one result per event).
#[derive(Debug)]
pub enum Submission {
    /// One event, answered with its id and a `Location`.
    One(Event),
    /// Several, answered in the order sent.
    Batch(Vec<Event>),
}

impl Submission {
    fn events(self) -> Vec<Event> {
        match self {
            Submission::One(event) => vec![event],
            Submission::Batch(events) => events,
        }
    }

    fn len(&self) -> usize {
        match self {
            Submission::One(_) => 1,
            Submission::Batch(events) => events.len(),
        }
    }
}

/// A send's idempotency key and the fingerprint of what it sent.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The key, namespaced by where it came from (`header:...`, `messageId:...`).
    pub key: String,
    /// The route and body, hashed: the same key with another body is refused.
    pub fingerprint: [u8; 32],
}

/// An answer to give: its status, JSON body and, for one event, its `Location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The HTTP status: 202, or what the first request with the key was answered.
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// `/v1/notifications/{id}` for a single event.
    pub location: Option<String>,
}

impl Receipt {
    /// A receipt for a stored answer, its `Location` read back from its body.
    fn replayed(status: u16, body: String) -> Self {
        let location = serde_json::from_str::<Value>(&body).ok().and_then(|v| {
            v.get("id")
                .and_then(Value::as_str)
                .map(|id| format!("/v1/notifications/{id}"))
        });
        Receipt {
            status,
            body,
            location,
        }
    }
}

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The tenant is over its rate limit: try again after this long.
    #[error("rate limited")]
    RateLimited(Duration),
    /// More events at once than the tenant's burst: they can never pass together.
    #[error(
        "{events} events at once are more than this tenant's burst of {burst} \
         (rate_limits.burst): send at most {burst} in one batch"
    )]
    OverBurst {
        /// How many were sent.
        events: usize,
        /// The tenant's burst.
        burst: u32,
    },
    /// The idempotency key cannot be used (another body, or still in progress).
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// Not every event was queued (503): what happened, and each event's state.
    #[error("{message}")]
    NotQueued {
        /// A sentence for the client.
        message: String,
        /// Per event: its index, id and `queued`, `unconfirmed` (it may yet be queued) or
        /// `rejected`.
        details: Vec<Value>,
    },
}

/// Accepts events; one per process, shared by the HTTP handlers.
pub struct Ingress {
    broker: Arc<dyn Broker>,
    topology: Arc<Topology>,
    ledger: Ledger,
    idempotency: Idempotency,
    rate_limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
    publish_timeout: Duration,
    /// Publishes answered 503 before the broker confirmed them, followed to their end.
    unconfirmed: TaskTracker,
}

/// A publish under way: the broker's answer for each publication.
type Publishing =
    std::pin::Pin<Box<dyn Future<Output = Vec<Result<(), PublishError>>> + Send + 'static>>;

/// How each event's publish ended, as the client is told.
#[derive(Debug, Clone)]
enum Published {
    Queued,
    /// The broker did not confirm in time: it may still be queued.
    Unconfirmed,
    Refused(PublishError),
}

impl Ingress {
    /// Ingress over these parts.
    pub fn new(
        broker: Arc<dyn Broker>,
        topology: Arc<Topology>,
        ledger: Ledger,
        idempotency: Idempotency,
        rate_limits: Arc<RateLimits>,
        metrics: Arc<Metrics>,
        publish_timeout: Duration,
    ) -> Self {
        Ingress {
            broker,
            topology,
            ledger,
            idempotency,
            rate_limits,
            metrics,
            publish_timeout,
            unconfirmed: TaskTracker::new(),
        }
    }

    /// Accepts `submission` for `tenant`: once per `key`, if it has one.
    pub async fn accept(
        &self,
        tenant: &TenantId,
        key: Option<IdempotencyKey>,
        submission: Submission,
    ) -> Result<Receipt, IngressError> {
        let count = u32::try_from(submission.len()).unwrap_or(u32::MAX);
        self.rate_limits
            .admit(tenant, count)
            .map_err(|refusal| match refusal {
                Refusal::Wait(wait) => IngressError::RateLimited(wait),
                Refusal::OverBurst { burst } => IngressError::OverBurst {
                    events: submission.len(),
                    burst,
                },
            })?;
        let single = matches!(submission, Submission::One(_));
        let events = submission.events();
        let Some(key) = key else {
            let envelopes: Vec<Envelope> = events.into_iter().map(Envelope::new).collect();
            return self.queue(&envelopes, single, None, tenant).await;
        };
        let proposed = KeyBinding {
            event_ids: events
                .iter()
                .map(|_| NotificationId::new().to_string())
                .collect(),
            accepted_at: Utc::now(),
        };
        let binding = match self
            .idempotency
            .begin(tenant, &key.key, &key.fingerprint, &proposed)
            .await?
        {
            Begin::Repeat(status, body) => return Ok(Receipt::replayed(status, body)),
            Begin::First => proposed,
            Begin::Resume(binding) => {
                tracing::debug!(key = %key.key, "publishing the unconfirmed events of an idempotency key again");
                binding
            }
        };
        let envelopes = bound(events, &binding);
        self.queue(&envelopes, single, Some(&key.key), tenant).await
    }

    /// Publishes `envelopes`, records their acceptance, and answers.
    ///
    /// The acceptance is written while the broker confirms, not after, so that a send
    /// waits for the slower of the two rather than both; what the broker did not take is
    /// withdrawn from the ledger before the answer (nobody knows its id before then).
    async fn queue(
        &self,
        envelopes: &[Envelope],
        single: bool,
        key: Option<&str>,
        tenant: &TenantId,
    ) -> Result<Receipt, IngressError> {
        let answer = answer(envelopes, single);
        let ((published, unconfirmed), ()) =
            tokio::join!(self.publish(envelopes), self.ledger.accepted(envelopes));
        let not_queued: Vec<&Envelope> = envelopes
            .iter()
            .zip(&published)
            .filter(|(_, p)| !matches!(p, Published::Queued))
            .map(|(e, _)| e)
            .collect();
        if not_queued.is_empty() {
            if let Some(key) = key
                && let Err(e) = self
                    .idempotency
                    .finish(tenant, key, 202, &answer.body)
                    .await
            {
                // The events are queued: say so. A repeat resumes the key once it is
                // stale and publishes them again, which consumers deduplicate.
                tracing::error!(error = %e, "recording an idempotent answer failed");
            }
            return Ok(answer);
        }
        self.ledger.withdraw(&not_queued).await;
        // Only now: a late confirmation records the acceptance again, after the withdrawal.
        if let Some(publishing) = unconfirmed {
            let follow = (tenant.clone(), key.map(str::to_owned), answer.body.clone());
            self.follow(publishing, envelopes.to_vec(), follow);
        }
        if let Some(key) = key {
            self.idempotency.unconfirmed(tenant, key).await;
        }
        Err(not_queued_error(envelopes, &published, key.is_some()))
    }

    /// Publishes every envelope and waits for the broker, up to the publish timeout; what
    /// is still unconfirmed then is answered too, for the caller to follow.
    async fn publish(&self, envelopes: &[Envelope]) -> (Vec<Published>, Option<Publishing>) {
        let publications: Vec<Publication> = envelopes
            .iter()
            .map(|e| Publication::of(e, &self.topology))
            .collect();
        let broker = self.broker.clone();
        let started = Instant::now();
        let mut publishing: Publishing =
            Box::pin(async move { broker.publish_all(publications).await });
        let results = match tokio::time::timeout(self.publish_timeout, &mut publishing).await {
            Ok(results) => results,
            Err(_) => {
                return (
                    vec![Published::Unconfirmed; envelopes.len()],
                    Some(publishing),
                );
            }
        };
        for (envelope, result) in envelopes.iter().zip(&results) {
            let queue = &self.topology.queue(envelope.event.kind()).configured_name;
            self.metrics
                .confirm_seconds
                .get_or_create(&QueueLabels {
                    queue: queue.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => self.metrics.publish(queue, "confirmed"),
                Err(e) => self.metrics.publish(queue, e.label()),
            }
        }
        let published = results
            .into_iter()
            .map(|r| match r {
                Ok(()) => Published::Queued,
                Err(e) => {
                    tracing::warn!(error = %e, "event not queued");
                    Published::Refused(e)
                }
            })
            .collect();
        (published, None)
    }

    /// Follows a publish answered 503 before the broker confirmed it: a late confirmation
    /// records the acceptance and completes the idempotency key, since the events are
    /// queued after all.
    fn follow(
        &self,
        publishing: Publishing,
        envelopes: Vec<Envelope>,
        (tenant, key, answer): (TenantId, Option<String>, String),
    ) {
        let ledger = self.ledger.clone();
        let idempotency = self.idempotency.clone();
        let metrics = self.metrics.clone();
        let topology = self.topology.clone();
        self.unconfirmed.spawn(async move {
            let results = publishing.await;
            let late: Vec<Envelope> = envelopes
                .into_iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(e, _)| e)
                .collect();
            for envelope in &late {
                let queue = &topology.queue(envelope.event.kind()).configured_name;
                metrics.publish(queue, "confirmed_late");
                tracing::warn!(id = %envelope.id, "an event answered 503 was confirmed late: it is queued");
            }
            if late.is_empty() {
                return;
            }
            ledger.accepted(&late).await;
            if let Some(key) = key
                && late.len() == results.len()
                && let Err(e) = idempotency.finish(&tenant, &key, 202, &answer).await
            {
                tracing::error!(error = %e, "recording a late idempotent answer failed");
            }
        });
    }

    /// Waits up to `grace` for the publishes still being followed, so that an event
    /// confirmed late has its acceptance recorded before the process exits.
    pub async fn drain(&self, grace: Duration) {
        self.unconfirmed.close();
        if tokio::time::timeout(grace, self.unconfirmed.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.unconfirmed.len(),
                "publishes still unconfirmed at exit; their events may be queued without an acceptance in the ledger"
            );
        }
    }
}

/// The envelopes of `events` under the ids and time the key bound them to; if the binding
/// does not fit (it cannot, for the same request), fresh ones.
fn bound(events: Vec<Event>, binding: &KeyBinding) -> Vec<Envelope> {
    let ids: Vec<NotificationId> = binding
        .event_ids
        .iter()
        .filter_map(|id| NotificationId::parse(id).ok())
        .collect();
    if ids.len() != events.len() {
        tracing::error!("an idempotency key's binding does not fit its request; sending afresh");
        return events.into_iter().map(Envelope::new).collect();
    }
    events
        .into_iter()
        .zip(ids)
        .map(|(event, id)| Envelope::bound(event, id, binding.accepted_at))
        .collect()
}

/// The 202 answer for `envelopes`.
fn answer(envelopes: &[Envelope], single: bool) -> Receipt {
    let accepted = |e: &Envelope| Accepted {
        id: e.id,
        status: "queued",
    };
    let (body, location) = if single {
        let envelope = &envelopes[0];
        (
            serde_json::to_string(&accepted(envelope)),
            Some(format!("/v1/notifications/{}", envelope.id)),
        )
    } else {
        let results = envelopes.iter().map(accepted).collect();
        (serde_json::to_string(&BatchAccepted { results }), None)
    };
    Receipt {
        status: 202,
        body: body.expect("an answer serializes"),
        location,
    }
}

/// The 503 for a submission not wholly queued: each event's state, and what to do.
fn not_queued_error(envelopes: &[Envelope], published: &[Published], keyed: bool) -> IngressError {
    let unconfirmed = published
        .iter()
        .any(|p| matches!(p, Published::Unconfirmed));
    let refusal = published.iter().find_map(|p| match p {
        Published::Refused(e) => Some(e.to_string()),
        _ => None,
    });
    let repeat = if keyed {
        "repeat the request with the same Idempotency-Key: it queues each event once"
    } else {
        "send an Idempotency-Key so that a repeat cannot queue an event twice"
    };
    let message = match refusal {
        Some(refusal) if !unconfirmed => {
            format!("the event could not be queued ({refusal}); try again later")
        }
        _ => format!(
            "the broker did not confirm in time, so the event may or may not be queued; {repeat}"
        ),
    };
    let details = envelopes
        .iter()
        .zip(published)
        .enumerate()
        .map(|(index, (envelope, published))| match published {
            Published::Queued => json!({"index": index, "id": envelope.id, "status": "queued"}),
            Published::Unconfirmed => {
                json!({"index": index, "id": envelope.id, "status": "unconfirmed"})
            }
            Published::Refused(e) => {
                json!({"index": index, "id": envelope.id, "status": "rejected", "message": e.to_string()})
            }
        })
        .collect();
    IngressError::NotQueued { message, details }
}
