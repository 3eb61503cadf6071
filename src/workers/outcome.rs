//! The one outcome every message ends in.

pub use crate::store::RenderedFrom;
use std::time::Duration;

/// What a handler made of one message. The pool turns it into exactly one settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the message is acknowledged.
    Delivered,
    /// Failed for now: try again later (after `after` if the provider said when, else
    /// after the queue's backoff), or dead-letter it if attempts are used up.
    Retry {
        /// What went wrong, kept as the message's last error.
        error: String,
        /// A wait the provider asked for (`Retry-After`), if any.
        after: Option<Duration>,
    },
    /// Failed for good (an invalid address, an unregistered token): dead-lettered now.
    Failed {
        /// Why.
        error: String,
    },
    /// Too old to deliver: dead-lettered as expired.
    Expired,
    /// Not an event Herald may act on (its tenant does not exist, say): dead-lettered as
    /// rejected, with nothing sent and nothing stored.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Nothing to deliver to (a recipient without a device for the platform): a final
    /// state of its own, acknowledged rather than dead-lettered, since no replay would
    /// change it.
    Undeliverable {
        /// Why.
        reason: String,
    },
    /// The event went to several targets (one email per recipient, one push per device)
    /// with an outcome each; the message is settled by [`Report::settlement`].
    PerDelivery(Report),
}

/// The outcomes of an event's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The channel they went through (`email`, `push`).
    pub channel: &'static str,
    /// Every delivery the event makes, including those done in earlier attempts, so that
    /// the ledger can sum them up.
    pub deliveries: Vec<DeliveryOutcome>,
    /// The template the content was rendered from, if any.
    pub template: Option<RenderedFrom>,
}

/// What became of one delivery: to one recipient, at one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// The user or address it is for.
    pub recipient: String,
    /// Where it went: an address, a device token.
    pub target: String,
    /// Delivered, retry, failed or undeliverable (never `PerDelivery`).
    pub outcome: Outcome,
    /// The attempt that produced this outcome.
    pub attempt: u32,
    /// What the provider answered, kept in the ledger (an SMTP reply, say).
    pub reply: Option<String>,
}

impl Report {
    /// How the message as a whole is settled: retried while any delivery waits for a
    /// retry (only those are attempted again), dead-lettered when some failed for good
    /// and none was delivered, acknowledged otherwise (undeliverable recipients included:
    /// no replay would change them): the ledger keeps each delivery's fate.
    pub fn settlement(&self) -> Outcome {
        let errors = |wanted: fn(&Outcome) -> bool| {
            self.deliveries
                .iter()
                .filter(|d| wanted(&d.outcome))
                .filter_map(|d| match &d.outcome {
                    Outcome::Retry { error, .. } | Outcome::Failed { error } => {
                        Some(format!("{}: {error}", d.recipient))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let retrying = self
            .deliveries
            .iter()
            .filter_map(|d| match &d.outcome {
                Outcome::Retry { after, .. } => Some(*after),
                _ => None,
            })
            .collect::<Vec<_>>();
        if !retrying.is_empty() {
            return Outcome::Retry {
                error: errors(|o| matches!(o, Outcome::Retry { .. })),
                after: retrying.into_iter().flatten().max(),
            };
        }
        // Dead-lettered when something failed and nothing reached anyone: a replay may
        // then help. Undeliverable recipients stay as they are either way.
        let any_failed = self
            .deliveries
            .iter()
            .any(|d| matches!(d.outcome, Outcome::Failed { .. }));
        let none_delivered = !self
            .deliveries
            .iter()
            .any(|d| matches!(d.outcome, Outcome::Delivered));
        if any_failed && none_delivered {
            Outcome::Failed {
                error: errors(|o| matches!(o, Outcome::Failed { .. })),
            }
        } else if none_delivered && !self.deliveries.is_empty() {
            Outcome::Undeliverable {
                reason: self
                    .deliveries
                    .iter()
                    .filter_map(|d| match &d.outcome {
                        Outcome::Undeliverable { reason } => {
                            Some(format!("{}: {reason}", d.recipient))
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        } else {
            Outcome::Delivered
        }
    }

    /// The notification's status the deliveries add up to.
    pub fn status(&self) -> &'static str {
        let count = |wanted: fn(&Outcome) -> bool| {
            self.deliveries
                .iter()
                .filter(|d| wanted(&d.outcome))
                .count()
        };
        let delivered = count(|o| matches!(o, Outcome::Delivered));
        let waiting = count(|o| matches!(o, Outcome::Retry { .. }));
        let failed = count(|o| matches!(o, Outcome::Failed { .. }));
        let undeliverable = count(|o| matches!(o, Outcome::Undeliverable { .. }));
        match (delivered, waiting, failed, undeliverable) {
            (_, 0, 0, 0) => "delivered",
            (0, 0, 0, _) => "undeliverable",
            (0, 0, _, _) => "failed",
            (_, 0, _, _) => "partially_delivered",
            (0, _, _, _) => "queued",
            _ => "processing",
        }
    }
}

impl Outcome {
    /// A retry after the queue's backoff.
    pub fn retry(error: impl std::fmt::Display) -> Self {
        Outcome::Retry {
            error: error.to_string(),
            after: None,
        }
    }

    /// A permanent failure.
    pub fn failed(error: impl std::fmt::Display) -> Self {
        Outcome::Failed {
            error: error.to_string(),
        }
    }

    /// A recipient with nothing to deliver to.
    pub fn undeliverable(reason: impl std::fmt::Display) -> Self {
        Outcome::Undeliverable {
            reason: reason.to_string(),
        }
    }

    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
            Outcome::Expired => "expired",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Undeliverable { .. } => "undeliverable",
            Outcome::PerDelivery(report) => report.settlement().label(),
        }
    }
}
