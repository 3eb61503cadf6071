//! The embedded broker's single writer: every change to the queues, committed in groups.

use super::Shared;
use crate::broker::{BrokerError, DroppedLetter, PublishError};
use bytes::Bytes;
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use std::collections::{HashMap, HashSet};
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

/// How a delivered message is settled other than by an acknowledgement.
pub(super) enum Settlement {
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
    /// Acknowledge one delivered message (delete it); answers whether it was still there.
    /// The acknowledgements of a group are deleted together.
    Ack {
        queue: String,
        id: i64,
        reply: SettleReply,
    },
    /// Settle one delivered message otherwise; answers whether it was still there.
    Settle {
        queue: String,
        id: i64,
        settlement: Settlement,
        reply: SettleReply,
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
    /// Drop the letters of a dead-letter queue dead before `dead_before_ms`, then the
    /// oldest beyond `max_length`; answers them.
    Trim {
        dead_letter_queue: String,
        max_length: u64,
        dead_before_ms: i64,
        reply: oneshot::Sender<Result<Vec<DroppedLetter>, BrokerError>>,
    },
    /// Move what has expired in these (queue, dead-letter queue) pairs; answers how many.
    Expire {
        now_ms: i64,
        queues: Vec<(String, String)>,
        reply: oneshot::Sender<Result<u64, BrokerError>>,
    },
}

impl Write {
    /// Whether its commit must be on disk before it is answered: a publish is answered
    /// 202 on it, and a replay moves dead letters an operator asked for. A settlement need
    /// not: it survives the process dying either way (the commit is in the operating
    /// system's hands), and one lost with the machine's power is undone, so that its
    /// message is delivered again, which every handler tolerates. RabbitMQ treats
    /// acknowledgements the same way.
    fn must_reach_disk(&self) -> bool {
        matches!(self, Write::Publish { .. } | Write::Replay { .. })
    }
}

/// The writer's connection, and whether its commits wait for the disk.
pub(super) struct WriterConnection {
    connection: SqliteConnection,
    synchronous_full: bool,
}

impl WriterConnection {
    /// `connection` must have been opened with `synchronous = FULL`.
    pub(super) fn new(connection: SqliteConnection) -> Self {
        WriterConnection {
            connection,
            synchronous_full: true,
        }
    }

    /// Makes the next commit wait for the disk, or not. In WAL mode a commit that waits
    /// also puts every earlier one on disk.
    async fn sync_commits(&mut self, full: bool) -> Result<(), sqlx::Error> {
        if self.synchronous_full != full {
            let pragma = if full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            sqlx::query(pragma).execute(&mut self.connection).await?;
            self.synchronous_full = full;
        }
        Ok(())
    }
}

/// Where a settlement answers whether its message was still there.
pub(super) type SettleReply = oneshot::Sender<Result<bool, BrokerError>>;

/// An acknowledgement: the queue, the message, and where to answer.
type Ack = (String, i64, SettleReply);

/// A result decided inside the transaction, sent only once it commits.
enum Pending {
    Publish(
        oneshot::Sender<Result<(), PublishError>>,
        Result<(), PublishError>,
    ),
    Settle(SettleReply, bool),
    Count(oneshot::Sender<Result<u64, BrokerError>>, u64),
    Dropped(
        oneshot::Sender<Result<Vec<DroppedLetter>, BrokerError>>,
        Vec<DroppedLetter>,
    ),
}

impl Pending {
    fn commit(self) {
        // A caller that stopped waiting no longer needs its answer.
        let _ = match self {
            Pending::Publish(reply, result) => reply.send(result).is_ok(),
            Pending::Settle(reply, found) => reply.send(Ok(found)).is_ok(),
            Pending::Count(reply, count) => reply.send(Ok(count)).is_ok(),
            Pending::Dropped(reply, dropped) => reply.send(Ok(dropped)).is_ok(),
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
            Pending::Dropped(reply, _) => reply.send(Err(error())).is_ok(),
        };
    }
}

/// Applies changes until every sender is gone.
pub(super) async fn run(
    mut connection: WriterConnection,
    mut writes: mpsc::Receiver<Write>,
    shared: std::sync::Arc<Shared>,
) {
    let mut group = Vec::with_capacity(GROUP_LIMIT);
    while writes.recv_many(&mut group, GROUP_LIMIT).await > 0 {
        commit_group(&mut connection, std::mem::take(&mut group), &shared).await;
    }
}

/// Applies a group of changes in one transaction and answers each after the commit.
async fn commit_group(connection: &mut WriterConnection, group: Vec<Write>, shared: &Shared) {
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
    connection: &mut WriterConnection,
    group: Vec<Write>,
    shared: &Shared,
    pending: &mut Vec<Pending>,
    depth_changes: &mut HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    connection
        .sync_commits(group.iter().any(Write::must_reach_disk))
        .await?;
    let mut tx = connection.connection.begin().await?;
    let mut accepted: Vec<NewMessage> = Vec::new();
    // Acknowledged messages, deleted together after the other changes.
    let mut acks: Vec<Ack> = Vec::new();
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
            Write::Ack { queue, id, reply } => acks.push((queue, id, reply)),
            Write::Settle {
                queue,
                id,
                settlement,
                reply,
            } => {
                let found = settle(&mut tx, &queue, id, &settlement).await?;
                // A retry stays in its queue; a dead letter moves to its own.
                if found
                    && let Settlement::DeadLetter {
                        dead_letter_queue, ..
                    } = &settlement
                {
                    *depth_changes.entry(queue).or_default() -= 1;
                    *depth_changes.entry(dead_letter_queue.clone()).or_default() += 1;
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
                     SET queue = ?, dead_reason = NULL, last_error = NULL, \
                         earlier_attempts = earlier_attempts + attempts, attempts = 0, \
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
            Write::Trim {
                dead_letter_queue,
                max_length,
                dead_before_ms,
                reply,
            } => {
                // A letter's available_ms is when it was dead-lettered.
                let mut dropped = dropped_letters(
                    sqlx::query_as(
                        "DELETE FROM broker_messages WHERE queue = ? AND available_ms < ? \
                         RETURNING message_id, dead_reason",
                    )
                    .bind(&dead_letter_queue)
                    .bind(dead_before_ms)
                    .fetch_all(&mut *tx)
                    .await?,
                    "age",
                );
                let (depth, _) = limits.get(&dead_letter_queue).copied().unwrap_or_default();
                let depth = depth as i64
                    + depth_changes.get(&dead_letter_queue).copied().unwrap_or(0)
                    - dropped.len() as i64;
                let surplus = depth - i64::try_from(max_length).unwrap_or(i64::MAX);
                if surplus > 0 {
                    dropped.extend(dropped_letters(
                        sqlx::query_as(
                            "DELETE FROM broker_messages WHERE id IN \
                             (SELECT id FROM broker_messages WHERE queue = ? ORDER BY id LIMIT ?) \
                             RETURNING message_id, dead_reason",
                        )
                        .bind(&dead_letter_queue)
                        .bind(surplus)
                        .fetch_all(&mut *tx)
                        .await?,
                        "length",
                    ));
                }
                *depth_changes.entry(dead_letter_queue).or_default() -= dropped.len() as i64;
                pending.push(Pending::Dropped(reply, dropped));
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
    delete_acknowledged(&mut tx, acks, pending, depth_changes).await?;
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

/// Dead letters deleted by the bound `bound`, from their (message id, reason) rows.
fn dropped_letters(
    rows: Vec<(Option<String>, Option<String>)>,
    bound: &'static str,
) -> Vec<DroppedLetter> {
    rows.into_iter()
        .map(|(message_id, reason)| DroppedLetter {
            message_id,
            reason: reason.unwrap_or_else(|| "unknown".into()),
            bound,
        })
        .collect()
}

/// Deletes acknowledged messages, one statement per queue rather than one per message;
/// each acknowledgement is answered whether its message was still there.
async fn delete_acknowledged(
    tx: &mut SqliteConnection,
    acks: Vec<Ack>,
    pending: &mut Vec<Pending>,
    depth_changes: &mut HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    let mut by_queue: HashMap<String, Vec<i64>> = HashMap::new();
    for (queue, id, _) in &acks {
        by_queue.entry(queue.clone()).or_default().push(*id);
    }
    let mut deleted: HashMap<String, HashSet<i64>> = HashMap::new();
    for (queue, ids) in by_queue {
        let gone: HashSet<i64> = sqlx::query_scalar(
            "DELETE FROM broker_messages \
             WHERE queue = ? AND id IN (SELECT value FROM json_each(?)) RETURNING id",
        )
        .bind(&queue)
        .bind(serde_json::to_string(&ids).expect("ids serialize"))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        *depth_changes.entry(queue.clone()).or_default() -= gone.len() as i64;
        deleted.insert(queue, gone);
    }
    for (queue, id, reply) in acks {
        // Taken out, so that the same message acknowledged twice is found once.
        let found = deleted.get_mut(&queue).is_some_and(|gone| gone.remove(&id));
        pending.push(Pending::Settle(reply, found));
    }
    Ok(())
}

/// Applies one settlement; false if the message is no longer in `queue`.
async fn settle(
    tx: &mut SqliteConnection,
    queue: &str,
    id: i64,
    settlement: &Settlement,
) -> Result<bool, sqlx::Error> {
    let query = match settlement {
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
