//! What became of an event: the one [`Outcome`] every message ends in, the [`Report`] of
//! an event's deliveries, and the statuses the ledger shows for them.
//!
//! A leaf: it depends on nothing else in the crate, so that the worker pools that settle
//! by an outcome, the channels that produce one, the ledger that records it and the store
//! that keeps it all share these types without depending on each other.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Declares a status enum written as its snake_case name everywhere: in the API, in the
/// database and in logs.
macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// Its name, as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<Self, UnknownStatus> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownStatus(text.to_owned())),
                }
            }
        }

        /// Read back from where it is stored as its name.
        impl TryFrom<String> for $name {
            type Error = UnknownStatus;

            fn try_from(text: String) -> Result<Self, UnknownStatus> {
                text.parse()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A status name that is not one of the known ones (a row written by a newer Herald).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status '{0}'")]
pub struct UnknownStatus(pub String);

status_enum! {
    /// The channel a delivery goes through.
    Channel {
        /// Chat and in-app events, over WebSocket.
        Realtime => "realtime",
        /// APNs and FCM.
        Push => "push",
        /// SMTP, or the outbox.
        Email => "email",
        /// The tenant's audit log.
        Audit => "audit",
    }
}

status_enum! {
    /// Where one delivery stands.
    DeliveryStatus {
        /// Waiting for its first attempt, or for a retry.
        Queued => "queued",
        /// Reached its target.
        Delivered => "delivered",
        /// Failed for good.
        Failed => "failed",
        /// Waited longer than its queue's TTL.
        Expired => "expired",
        /// Its recipient had nowhere to receive it.
        Undeliverable => "undeliverable",
        /// Not an event Herald may act on.
        Rejected => "rejected",
    }
}

status_enum! {
    /// Where a notification stands: its deliveries summed up.
    NotificationState {
        /// Waiting for its first attempt, or every delivery waiting for a retry.
        Queued => "queued",
        /// Some deliveries made, others waiting for a retry.
        Processing => "processing",
        /// Every delivery made.
        Delivered => "delivered",
        /// Some deliveries made, others failed or had nowhere to go.
        PartiallyDelivered => "partially_delivered",
        /// Nothing delivered, and something failed for good.
        Failed => "failed",
        /// Waited longer than its queue's TTL.
        Expired => "expired",
        /// No recipient had anywhere to receive it.
        Undeliverable => "undeliverable",
        /// Not an event Herald may act on (one for a tenant that does not exist, say).
        Rejected => "rejected",
    }
}

impl NotificationState {
    /// A delivery's status counted as a whole notification's.
    pub fn of_delivery(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Queued => NotificationState::Queued,
            DeliveryStatus::Delivered => NotificationState::Delivered,
            DeliveryStatus::Failed => NotificationState::Failed,
            DeliveryStatus::Expired => NotificationState::Expired,
            DeliveryStatus::Undeliverable => NotificationState::Undeliverable,
            DeliveryStatus::Rejected => NotificationState::Rejected,
        }
    }

    /// One recipient's status, when this sums up its targets: the recipient is reached
    /// when any of its targets is.
    pub fn of_recipient(self) -> DeliveryStatus {
        match self {
            NotificationState::Delivered
            | NotificationState::PartiallyDelivered
            | NotificationState::Processing => DeliveryStatus::Delivered,
            NotificationState::Queued => DeliveryStatus::Queued,
            NotificationState::Undeliverable => DeliveryStatus::Undeliverable,
            NotificationState::Expired => DeliveryStatus::Expired,
            NotificationState::Rejected => DeliveryStatus::Rejected,
            NotificationState::Failed => DeliveryStatus::Failed,
        }
    }
}

/// The template (and version) a message was rendered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderedFrom {
    /// The template's name.
    pub name: String,
    /// The locale rendered, in its conventional form (`fr-CA`); absent for the default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(value_type = Option<String>)]
    pub locale: String,
    /// The tenant's version, or none for a built-in template.
    pub version: Option<i64>,
}

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
    /// The channel they went through.
    pub channel: Channel,
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
    pub fn status(&self) -> NotificationState {
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
            (_, 0, 0, 0) => NotificationState::Delivered,
            (0, 0, 0, _) => NotificationState::Undeliverable,
            (0, 0, _, _) => NotificationState::Failed,
            (_, 0, _, _) => NotificationState::PartiallyDelivered,
            (0, _, _, _) => NotificationState::Queued,
            _ => NotificationState::Processing,
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
