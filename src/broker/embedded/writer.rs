//! The embedded broker's single writer: every change to the queues, committed in groups.

use super::Shared;
use crate::broker::{BrokerError, PublishError};
use bytes::Bytes;
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// How many changes one transaction takes at most.
const GROUP_LIMIT: usize = 1024;
/// Rows per INSERT statement: 7 parameters each, under SQLite's 32766.
const ROWS_PER_INSERT: usize = 1000;

/// A message to insert into a queue.
pub(super) struct NewMessage {
    pub queue: String,
    pub routing_key: String,
    pub message_id: String,
    pub body: Bytes,
    pub published_ms: i64,
    pub expires_ms: i64,
}

/// How a delivered message is settled.
pub(super) enum Settlement {
    Ack,
    Retry {
        available_ms: i64,
        error: String,
    },
    DeadLetter {
        dead_letter_queue: String,
        reason: &'static str,
        error: Option<String>,
        now_ms: i64,
    },
}

/// One change for the writer, with where to send its result once committed.
pub(super) enum Write {
    /// Queue these rows, all or none.
    Publish {
        rows: Vec<NewMessage>,
        reply: oneshot::Sender<Result<(), PublishError>>,
    },
    /// Settle one delivered message; answers whether the message was still there.
    Settle {
        queue: String,
        id: i64,
        settlement: Settlement,
        reply: oneshot::Sender<Result<bool, BrokerError>>,
    },
    /// Move up to `limit` dead letters back to their queue, expiring after `ttl_ms`;
    /// answers how many.
    Replay {
        queue: String,
        dead_letter_queue: String,
        limit: i64,
        now_ms: i64,
        ttl_ms: i64,
        reply: oneshot::Sender<Result<u64, BrokerError>>,
    },
    /// Move what has expired in these (queue, dead-letter queue) pairs; answers how many.
    Expire {
        now_ms: i64,
        queues: Vec<(String, String)>,
        reply: oneshot::Sender<Result<u64, BrokerError>>,
    },
}

/// A result decided inside the transaction, sent only once it commits.
enum Pending {
    Publish(
        oneshot::Sender<Result<(), PublishError>>,
        Result<(), PublishError>,
    ),
    Settle(oneshot::Sender<Result<bool, BrokerError>>, bool),
    Count(oneshot::Sender<Result<u64, BrokerError>>, u64),
}

impl Pending {
    fn commit(self) {
        // A caller that stopped waiting no longer needs its answer.
        let _ = match self {
            Pending::Publish(reply, result) => reply.send(result).is_ok(),
            Pending::Settle(reply, found) => reply.send(Ok(found)).is_ok(),
            Pending::Count(reply, count) => reply.send(Ok(count)).is_ok(),
        };
    }

    fn fail(self, cause: &str) {
        let error = || BrokerError::Unavailable(format!("embedded broker commit failed: {cause}"));
        let _ = match self {
            Pending::Publish(reply, _) => reply
                .send(Err(PublishError::Unavailable(cause.to_owned())))
                .is_ok(),
            Pending::Settle(reply, _) => reply.send(Err(error())).is_ok(),
            Pending::Count(reply, _) => reply.send(Err(error())).is_ok(),
        };
    }
}

/// Applies changes until every sender is gone.
pub(super) async fn run(
    mut connection: SqliteConnection,
    mut writes: mpsc::Receiver<Write>,
    shared: std::sync::Arc<Shared>,
) {
    let mut group = Vec::with_capacity(GROUP_LIMIT);
    while writes.recv_many(&mut group, GROUP_LIMIT).await > 0 {
        commit_group(&mut connection, std::mem::take(&mut group), &shared).await;
    }
}

/// Applies a group of changes in one transaction and answers each after the commit.
async fn commit_group(connection: &mut SqliteConnection, group: Vec<Write>, shared: &Shared) {
    let mut pending = Vec::with_capacity(group.len());
    let mut depth_changes: HashMap<String, i64> = HashMap::new();
    let result = apply(connection, group, shared, &mut pending, &mut depth_changes).await;
    match result {
        Ok(()) => {
            let mut arrivals = Vec::new();
            {
                let mut queues = shared.queues.lock().expect("queue state lock poisoned");
                for (queue, change) in depth_changes {
                    let state = queues.entry(queue).or_default();
                    state.depth = state.depth.saturating_add_signed(change);
                    if change > 0 {
                        arrivals.push(state.arrivals.clone());
                    }
                }
            }
            for arrival in arrivals {
                arrival.notify_waiters();
            }
            pending.into_iter().for_each(Pending::commit);
        }
        Err(e) => {
            tracing::error!(error = %e, "embedded broker: a group commit failed");
            let cause = e.to_string();
            pending.into_iter().for_each(|p| p.fail(&cause));
        }
    }
}

async fn apply(
    connection: &mut SqliteConnection,
    group: Vec<Write>,
    shared: &Shared,
    pending: &mut Vec<Pending>,
    depth_changes: &mut HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    let mut tx = connection.begin().await?;
    let mut accepted: Vec<NewMessage> = Vec::new();
    let limits: HashMap<String, (u64, Option<u64>)> = {
        let queues = shared.queues.lock().expect("queue state lock poisoned");
        queues
            .iter()
            .map(|(name, q)| (name.clone(), (q.depth, q.max_length)))
            .collect()
    };
    for write in group {
        match write {
            Write::Publish { rows, reply } => {
                let full = rows.iter().find(|row| {
                    let (depth, max) = limits.get(&row.queue).copied().unwrap_or_default();
                    let planned = depth_changes.get(&row.queue).copied().unwrap_or(0)
                        + rows.iter().filter(|r| r.queue == row.queue).count() as i64;
                    max.is_some_and(|max| depth as i64 + planned > max as i64)
                });
                let result = match full {
                    Some(row) => Err(PublishError::QueueFull(row.queue.clone())),
                    None => {
                        for row in &rows {
                            *depth_changes.entry(row.queue.clone()).or_default() += 1;
                        }
                        accepted.extend(rows);
                        Ok(())
                    }
                };
                pending.push(Pending::Publish(reply, result));
            }
            Write::Settle {
                queue,
                id,
                settlement,
                reply,
            } => {
                let found = settle(&mut tx, &queue, id, &settlement).await?;
                if found {
                    match &settlement {
                        Settlement::Ack => *depth_changes.entry(queue).or_default() -= 1,
                        Settlement::Retry { .. } => {}
                        Settlement::DeadLetter {
                            dead_letter_queue, ..
                        } => {
                            *depth_changes.entry(queue).or_default() -= 1;
                            *depth_changes.entry(dead_letter_queue.clone()).or_default() += 1;
                        }
                    }
                }
                pending.push(Pending::Settle(reply, found));
            }
            Write::Replay {
                queue,
                dead_letter_queue,
                limit,
                now_ms,
                ttl_ms,
                reply,
            } => {
                let moved = sqlx::query(
                    "UPDATE broker_messages \
                     SET queue = ?, dead_reason = NULL, last_error = NULL, attempts = 0, \
                         available_ms = ?, expires_ms = ? \
                     WHERE id IN (SELECT id FROM broker_messages WHERE queue = ? ORDER BY id LIMIT ?)",
                )
                .bind(&queue)
                .bind(now_ms)
                .bind(now_ms.saturating_add(ttl_ms))
                .bind(&dead_letter_queue)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                *depth_changes.entry(dead_letter_queue).or_default() -= moved as i64;
                *depth_changes.entry(queue).or_default() += moved as i64;
                pending.push(Pending::Count(reply, moved));
            }
            Write::Expire {
                now_ms,
                queues,
                reply,
            } => {
                let mut expired = 0;
                for (queue, dead_letter_queue) in queues {
                    let leased: Vec<i64> =
                        shared.with_queue(&queue, |q| q.leases.keys().copied().collect());
                    let moved = sqlx::query(
                        "UPDATE broker_messages \
                         SET queue = ?, dead_reason = 'expired', expires_ms = NULL, available_ms = ? \
                         WHERE queue = ? AND expires_ms <= ? \
                           AND id NOT IN (SELECT value FROM json_each(?))",
                    )
                    .bind(&dead_letter_queue)
                    .bind(now_ms)
                    .bind(&queue)
                    .bind(now_ms)
                    .bind(serde_json::to_string(&leased).expect("ids serialize"))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if moved > 0 {
                        *depth_changes.entry(queue).or_default() -= moved as i64;
                        *depth_changes.entry(dead_letter_queue).or_default() += moved as i64;
                        expired += moved;
                    }
                }
                pending.push(Pending::Count(reply, expired));
            }
        }
    }
    for chunk in accepted.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO broker_messages \
             (queue, routing_key, message_id, body, published_ms, expires_ms, available_ms) ",
        );
        insert.push_values(chunk, |mut row, m| {
            row.push_bind(&m.queue)
                .push_bind(&m.routing_key)
                .push_bind(&m.message_id)
                .push_bind(m.body.as_ref())
                .push_bind(m.published_ms)
                .push_bind(m.expires_ms)
                .push_bind(m.published_ms);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Applies one settlement; false if the message is no longer in `queue`.
async fn settle(
    tx: &mut SqliteConnection,
    queue: &str,
    id: i64,
    settlement: &Settlement,
) -> Result<bool, sqlx::Error> {
    let query = match settlement {
        Settlement::Ack => sqlx::query("DELETE FROM broker_messages WHERE id = ? AND queue = ?")
            .bind(id)
            .bind(queue),
        Settlement::Retry {
            available_ms,
            error,
        } => sqlx::query(
            "UPDATE broker_messages SET available_ms = ?, attempts = attempts + 1, last_error = ? \
             WHERE id = ? AND queue = ?",
        )
        .bind(*available_ms)
        .bind(error)
        .bind(id)
        .bind(queue),
        Settlement::DeadLetter {
            dead_letter_queue,
            reason,
            error,
            now_ms,
        } => sqlx::query(
            "UPDATE broker_messages SET queue = ?, dead_reason = ?, last_error = COALESCE(?, last_error), \
             attempts = attempts + CASE WHEN ? = 'failed' THEN 1 ELSE 0 END, \
             expires_ms = NULL, available_ms = ? WHERE id = ? AND queue = ?",
        )
        .bind(dead_letter_queue)
        .bind(*reason)
        .bind(error)
        .bind(*reason)
        .bind(*now_ms)
        .bind(id)
        .bind(queue),
    };
    Ok(query.execute(tx).await?.rows_affected() == 1)
}
