//! Consuming an embedded queue: messages are read in id order and leased in memory.

use super::writer::{SettleReply, Settlement, Write};
use super::{EmbeddedBroker, Lease, millis, now_ms};
use crate::broker::{BrokerError, Consumer, DeadLetterReason, Delivery, QueueSpec, Settle};
use async_trait::async_trait;
use sqlx::Row;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A message read from the queue and leased, not yet handed to the worker pool.
struct Leased {
    id: i64,
    token: u64,
    routing_key: String,
    message_id: Option<String>,
    body: Vec<u8>,
    published_ms: i64,
    attempts: i64,
    earlier_attempts: i64,
    redelivered: bool,
}

pub(super) struct EmbeddedConsumer {
    broker: EmbeddedBroker,
    spec: QueueSpec,
    /// How many messages one read leases at most.
    batch: usize,
    buffer: VecDeque<Leased>,
    arrivals: Arc<Notify>,
    cancelled: bool,
}

impl EmbeddedConsumer {
    pub(super) fn new(broker: EmbeddedBroker, spec: QueueSpec, prefetch: u16) -> Self {
        let arrivals = broker.inner.shared.with_queue(&spec.name, |q| {
            q.consumers += 1;
            q.arrivals.clone()
        });
        EmbeddedConsumer {
            broker,
            spec,
            // Up to a pool's worth per read, so that a large pool (the audit writer's)
            // does not pay one read per few messages; bounded, so that few messages wait
            // leased but idle in the buffer.
            batch: usize::from(prefetch).clamp(1, 256),
            buffer: VecDeque::new(),
            arrivals,
            cancelled: false,
        }
    }

    /// Reads the next ready messages that nobody holds, and leases them.
    async fn lease_batch(&mut self) -> Result<(), BrokerError> {
        let shared = &self.broker.inner.shared;
        let now = Instant::now();
        let held: Vec<i64> = shared.with_queue(&self.spec.name, |q| {
            let lapsed: Vec<i64> = q
                .leases
                .iter()
                .filter(|(_, lease)| lease.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in lapsed {
                q.leases.remove(&id);
                q.lapsed.insert(id);
            }
            q.leases.keys().copied().collect()
        });
        let rows = sqlx::query(
            "SELECT id, routing_key, message_id, body, published_ms, attempts, earlier_attempts FROM broker_messages \
             WHERE queue = ? AND available_ms <= ? AND id NOT IN (SELECT value FROM json_each(?)) \
             ORDER BY id LIMIT ?",
        )
        .bind(&self.spec.name)
        .bind(now_ms())
        .bind(serde_json::to_string(&held).expect("ids serialize"))
        .bind(self.batch as i64)
        .fetch_all(&self.broker.inner.reads)
        .await?;
        let deadline = Instant::now() + self.broker.inner.settings.lease_timeout;
        let leased: Vec<(i64, u64, bool)> = shared.with_queue(&self.spec.name, |q| {
            let mut leased = Vec::with_capacity(rows.len());
            for id in rows.iter().map(|row| row.get::<i64, _>("id")) {
                // Another consumer of the same queue may have leased it since the read.
                if q.leases.contains_key(&id) {
                    continue;
                }
                let token = self.broker.next_token();
                q.leases.insert(id, Lease { token, deadline });
                leased.push((id, token, q.lapsed.remove(&id)));
            }
            leased
        });
        for row in rows {
            let id: i64 = row.get("id");
            if let Some(&(_, token, redelivered)) = leased.iter().find(|(l, ..)| *l == id) {
                self.buffer.push_back(Leased {
                    id,
                    token,
                    routing_key: row.get("routing_key"),
                    message_id: row.get("message_id"),
                    body: row.get("body"),
                    published_ms: row.get("published_ms"),
                    attempts: row.get("attempts"),
                    earlier_attempts: row.get("earlier_attempts"),
                    redelivered,
                });
            }
        }
        Ok(())
    }

    fn release_buffer(&mut self) {
        let leased: Vec<(i64, u64)> = self.buffer.drain(..).map(|m| (m.id, m.token)).collect();
        self.broker.inner.shared.with_queue(&self.spec.name, |q| {
            for (id, token) in leased {
                if q.leases.get(&id).is_some_and(|l| l.token == token) {
                    q.leases.remove(&id);
                }
            }
        });
    }

    fn deliver(&self, m: Leased) -> Delivery {
        Delivery::new(
            m.routing_key,
            bytes::Bytes::from(m.body),
            m.message_id,
            u64::try_from(m.published_ms / 1000).ok(),
            (
                u32::try_from(m.attempts)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1),
                u32::try_from(m.earlier_attempts).unwrap_or(u32::MAX),
            ),
            m.redelivered,
            Box::new(EmbeddedSettle {
                broker: self.broker.clone(),
                queue: self.spec.name.clone(),
                dead_letter_queue: self.spec.dead_letter_queue(),
                id: m.id,
                token: m.token,
            }),
        )
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if self.cancelled {
                return None;
            }
            if let Some(message) = self.buffer.pop_front() {
                return Some(Ok(self.deliver(message)));
            }
            // Listen before reading, so that an arrival between the read and the wait is
            // not missed.
            let arrivals = self.arrivals.clone();
            let arrival = arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            if let Err(e) = self.lease_batch().await {
                return Some(Err(e));
            }
            if self.buffer.is_empty() {
                let poll = self.broker.inner.settings.poll_interval;
                tokio::select! {
                    _ = arrival => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }

    async fn cancel(&mut self) {
        self.cancelled = true;
        self.release_buffer();
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.release_buffer();
        self.broker.inner.shared.with_queue(&self.spec.name, |q| {
            q.consumers = q.consumers.saturating_sub(1)
        });
    }
}

/// Settles one embedded delivery, fenced by its lease token.
struct EmbeddedSettle {
    broker: EmbeddedBroker,
    queue: String,
    dead_letter_queue: String,
    id: i64,
    token: u64,
}

impl EmbeddedSettle {
    /// Sends the change `settling` makes of (queue, message id, reply) to the writer, if
    /// this delivery still holds its lease.
    async fn apply(
        self,
        settling: impl FnOnce(String, i64, SettleReply) -> Write + Send,
    ) -> Result<(), BrokerError> {
        let shared = &self.broker.inner.shared;
        let holds = |q: &mut super::QueueState| {
            q.leases
                .get(&self.id)
                .is_some_and(|l| l.token == self.token)
        };
        if !shared.with_queue(&self.queue, holds) {
            return Err(BrokerError::LeaseLost(self.id.to_string()));
        }
        let found = self
            .broker
            .write(|reply| settling(self.queue.clone(), self.id, reply))
            .await??;
        shared.with_queue(&self.queue, |q| {
            if holds(q) {
                q.leases.remove(&self.id);
            }
        });
        if found {
            Ok(())
        } else {
            Err(BrokerError::LeaseLost(self.id.to_string()))
        }
    }
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.apply(|queue, id, reply| Write::Ack { queue, id, reply })
            .await
    }

    async fn retry(
        self: Box<Self>,
        _attempt: u32,
        delay: Duration,
        error: &str,
    ) -> Result<(), BrokerError> {
        let available_ms = now_ms().saturating_add(millis(delay));
        let settlement = Settlement::Retry {
            available_ms,
            error: error.to_owned(),
        };
        self.apply(|queue, id, reply| Write::Settle {
            queue,
            id,
            settlement,
            reply,
        })
        .await
    }

    async fn dead_letter(
        self: Box<Self>,
        _attempt: u32,
        reason: DeadLetterReason,
        error: Option<&str>,
    ) -> Result<(), BrokerError> {
        let dead_letter_queue = self.dead_letter_queue.clone();
        let settlement = Settlement::DeadLetter {
            dead_letter_queue,
            reason: reason.as_str(),
            error: error.map(str::to_owned),
            now_ms: now_ms(),
        };
        self.apply(|queue, id, reply| Write::Settle {
            queue,
            id,
            settlement,
            reply,
        })
        .await
    }
}
