//! The one outcome every message ends in.

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

    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
            Outcome::Expired => "expired",
        }
    }
}
