//! Idempotent sends. A send with an `Idempotency-Key` (or a chat message, whose
//! `messageId` serves as its key) queues its event once: the first request claims the key in
//! the store, where a primary key decides among concurrent requests on any instance, and
//! binds it to the ids its events will carry before publishing them. Repeats wait for the
//! first one's answer and get the same 202 body, and queue nothing. Should the first
//! request's events not be confirmed (a 503: the broker refused, or did not answer in time
//! and may yet have them), the key keeps its binding and a repeat publishes the same
//! envelopes again, under the same ids; consumers deduplicate by id, so that one key never
//! sends one event twice, whatever happened to the first attempt. The same key with a
//! different body is refused. Keys are kept 24 hours.
//!
//! Claims and answers go through one writer task, which writes whatever has piled up in
//! one transaction (group commit): every chat message has a key (its `messageId`), and on
//! SQLite, with one writer connection and an fsync per commit, a claim and an answer
//! committed one by one were two fsyncs per message before its 202.

use crate::domain::TenantId;
use crate::grouped::{GroupWrite, Grouped};
use crate::store::{Claim, IdempotencyStore, KeyBinding, KeyWrite, StoreError};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a repeat waits for the first request's answer before giving up with 409.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
/// How often a repeat looks for that answer.
const POLL: Duration = Duration::from_millis(20);

/// What to do with a request that carries a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// The first request with this key: send the events bound to it, then
    /// [`Idempotency::finish`] or [`Idempotency::unconfirmed`].
    First,
    /// An earlier request with this key did not see its events confirmed: send the events
    /// again under these ids, then finish as a first request does.
    Resume(KeyBinding),
    /// A repeat: answer this (status, JSON body) and queue nothing.
    Repeat(u16, String),
}

/// Why a keyed request cannot go ahead.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key was used with a different request (422).
    #[error("Idempotency-Key '{0}' was used with a different request")]
    Mismatch(String),
    /// The first request with the key has not been answered in time (409).
    #[error("a request with Idempotency-Key '{0}' is still being processed; try again shortly")]
    InProgress(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request's fingerprint: the route and the body it sent.
pub fn fingerprint(route: &str, body: &serde_json::Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(body).expect("a JSON value serializes"));
    hasher.finalize().into()
}

/// Most claims and answers one transaction writes.
const GROUP: usize = 256;

/// A claim or an answer for the writer, owned.
enum Queued {
    Claim {
        tenant: TenantId,
        key: String,
        fingerprint: Vec<u8>,
        binding: KeyBinding,
        expired_before: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    },
    Complete {
        tenant: TenantId,
        key: String,
        status: u16,
        response: String,
    },
}

impl Queued {
    fn write(&self) -> KeyWrite<'_> {
        match self {
            Queued::Claim {
                tenant,
                key,
                fingerprint,
                binding,
                expired_before,
                stale_before,
            } => KeyWrite::Claim {
                tenant,
                key,
                fingerprint,
                binding,
                expired_before: *expired_before,
                stale_before: *stale_before,
            },
            Queued::Complete {
                tenant,
                key,
                status,
                response,
            } => KeyWrite::Complete {
                tenant,
                key,
                status: *status,
                response,
            },
        }
    }
}

/// Writes a group of claims and answers in one transaction.
struct KeyWriter(Arc<dyn IdempotencyStore>);

impl GroupWrite for KeyWriter {
    type Item = Queued;
    type Outcome = Option<Claim>;

    async fn write(
        &mut self,
        group: &[Queued],
    ) -> Result<Vec<Result<Option<Claim>, String>>, String> {
        let writes: Vec<KeyWrite<'_>> = group.iter().map(Queued::write).collect();
        let outcomes = self.0.write_idempotency_keys(&writes).await;
        Ok(outcomes
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(Ok)
            .collect())
    }
}

/// Idempotency keys, in the store; cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    /// The writer of claims and answers.
    writes: Grouped<KeyWriter>,
    /// A claim this old without an answer belongs to a process that died: a repeat
    /// resumes it. A live request answers well within it (it is a few publish timeouts).
    stale_after: Duration,
}

impl Idempotency {
    /// Idempotency over `store`, resuming unanswered claims after `stale_after`.
    pub fn new(store: Arc<dyn IdempotencyStore>, stale_after: Duration) -> Self {
        Idempotency {
            writes: Grouped::start(KeyWriter(store.clone()), GROUP, GROUP),
            store,
            stale_after,
        }
    }

    /// Writes `write` with whatever else is queued, once its group is committed.
    async fn written(&self, write: Queued) -> Result<Option<Claim>, StoreError> {
        self.writes.write(write).await.map_err(StoreError::Grouped)
    }

    /// Claims `key` for a request whose events would be `binding`, or finds the answer
    /// (or the binding, to resume) of the request that claimed it.
    pub async fn begin(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &[u8],
        binding: &KeyBinding,
    ) -> Result<Begin, IdempotencyError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        loop {
            let now = Utc::now();
            let claim = Queued::Claim {
                tenant: tenant.clone(),
                key: key.to_owned(),
                fingerprint: fingerprint.to_vec(),
                binding: binding.clone(),
                expired_before: now - RETENTION,
                stale_before: now - self.stale_after,
            };
            let claim = self.written(claim).await?.ok_or_else(|| {
                StoreError::Grouped("the writer answered a claim with no outcome".into())
            })?;
            match claim {
                Claim::Claimed => return Ok(Begin::First),
                Claim::Resumed(binding) => return Ok(Begin::Resume(binding)),
                Claim::Held {
                    fingerprint: held, ..
                } if held != fingerprint => {
                    return Err(IdempotencyError::Mismatch(key.to_owned()));
                }
                Claim::Held {
                    response: Some((status, body)),
                    ..
                } => return Ok(Begin::Repeat(status, body)),
                Claim::Held { response: None, .. } if tokio::time::Instant::now() >= deadline => {
                    return Err(IdempotencyError::InProgress(key.to_owned()));
                }
                Claim::Held { response: None, .. } => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Records the first request's answer, for the repeats.
    pub async fn finish(
        &self,
        tenant: &TenantId,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        let complete = Queued::Complete {
            tenant: tenant.clone(),
            key: key.to_owned(),
            status,
            response: body.to_owned(),
        };
        self.written(complete).await.map(|_| ())
    }

    /// Marks the key's events as not confirmed after its request was answered 503, so
    /// that a repeat publishes them again.
    pub async fn unconfirmed(&self, tenant: &TenantId, key: &str) {
        if let Err(e) = self.store.unconfirm_idempotency_key(tenant, key).await {
            // A repeat resumes the claim once it is stale; until then it is answered 409.
            tracing::warn!(error = %e, "marking an idempotency key unconfirmed failed");
        }
    }
}
