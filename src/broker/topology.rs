//! The queue topology of the contract: exchanges, queues, bindings, TTLs, lengths,
//! dead-letter queues and retry schedules. Both brokers declare exactly this. The
//! configuration builds it (`Settings::topology`), in types that hold what it checked: a
//! queue's concurrency and length are not zero, its backoff is never empty.

use crate::domain::EventKind;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// The wait before each retry of a queue's messages: never empty, the last entry repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// The waits before the last.
    earlier: Vec<Duration>,
    /// The last wait, which repeats.
    last: Duration,
}

impl Backoff {
    /// The schedule of `delays`, if there is at least one.
    pub fn new(mut delays: Vec<Duration>) -> Option<Self> {
        let last = delays.pop()?;
        Some(Backoff {
            earlier: delays,
            last,
        })
    }

    /// The wait before retry `retry` (0 for the first).
    pub fn delay(&self, retry: usize) -> Duration {
        self.earlier.get(retry).copied().unwrap_or(self.last)
    }
}

/// One work queue and everything that hangs off it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// The event kind the queue carries.
    pub kind: EventKind,
    /// The queue's name as configured (`email.notifications`), used in metrics and the API.
    pub configured_name: String,
    /// The queue's name on the broker, with the prefix.
    pub name: String,
    /// The topic exchange it is bound to, with the prefix.
    pub exchange: String,
    /// The routing keys it is bound with (topic patterns: `*` and `#` work).
    pub routing_keys: Vec<String>,
    /// How long a message may wait before it expires.
    pub message_ttl: Duration,
    /// How many messages the queue holds before refusing more.
    pub max_length: NonZeroU32,
    /// How many messages its pool handles at once.
    pub concurrency: NonZeroUsize,
    /// Attempts before a failing message is dead-lettered (at least one).
    pub max_attempts: u32,
    /// The wait before each retry.
    pub backoff: Backoff,
    /// The most letters its dead-letter queue keeps.
    pub dead_letter_max_length: u64,
    /// How long a letter is kept in its dead-letter queue.
    pub dead_letter_max_age: Duration,
}

impl QueueSpec {
    /// The queue's dead-letter queue: expired and finally failed messages land there.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.name)
    }

    /// The wait before attempt `next_attempt` (2 for the first retry).
    pub fn retry_delay(&self, next_attempt: u32) -> Duration {
        self.backoff.delay(next_attempt.saturating_sub(2) as usize)
    }

    /// The distinct retry delays a message of this queue may wait, shortest first.
    pub fn retry_delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = (2..=self.max_attempts.max(2))
            .map(|attempt| self.retry_delay(attempt))
            .collect();
        delays.sort();
        delays.dedup();
        delays
    }

    /// Whether a message published with `routing_key` to `exchange` lands in this queue.
    pub fn binds(&self, exchange: &str, routing_key: &str) -> bool {
        self.exchange == exchange
            && self
                .routing_keys
                .iter()
                .any(|pattern| topic_matches(pattern, routing_key))
    }
}

/// The whole topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// One queue per event kind.
    pub queues: Vec<QueueSpec>,
    /// The alternate exchange of the queues' exchanges, and the queue bound to it, with
    /// the prefix: a message published with a routing key no queue is bound for lands
    /// there instead of vanishing (on RabbitMQ; the embedded broker refuses it).
    pub unrouted: String,
}

impl Topology {
    /// The queue of `kind`.
    pub fn queue(&self, kind: EventKind) -> &QueueSpec {
        self.queues
            .iter()
            .find(|q| q.kind == kind)
            .expect("the topology has a queue for every kind")
    }

    /// The queue with the configured or broker name `name`, or the queue whose
    /// dead-letter queue that is.
    pub fn queue_named(&self, name: &str) -> Option<&QueueSpec> {
        self.queues
            .iter()
            .find(|q| q.configured_name == name || q.name == name)
    }

    /// The exchanges, each once.
    pub fn exchanges(&self) -> Vec<&str> {
        let mut exchanges: Vec<&str> = self.queues.iter().map(|q| q.exchange.as_str()).collect();
        exchanges.sort_unstable();
        exchanges.dedup();
        exchanges
    }

    /// The queues a message published with `routing_key` to `exchange` lands in.
    pub fn route<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
    ) -> impl Iterator<Item = &'a QueueSpec> + 'a {
        self.queues
            .iter()
            .filter(move |q| q.binds(exchange, routing_key))
    }
}

/// AMQP topic matching: words split on `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", rest)), _) => {
                matches(rest, key) || (!key.is_empty() && matches(pattern, &key[1..]))
            }
            (Some((&p, prest)), Some((&k, krest))) => (p == "*" || p == k) && matches(prest, krest),
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches(&pattern, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("push.mobile", "push.mobile"));
        assert!(!topic_matches("push.mobile", "push.web"));
        assert!(topic_matches("push.*", "push.web"));
        assert!(!topic_matches("push.*", "push.web.extra"));
        assert!(topic_matches("push.#", "push.web.extra"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("user.*.#", "user.t1"));
    }

    #[test]
    fn the_retry_schedule_repeats_its_last_delay() {
        let spec = QueueSpec {
            kind: EventKind::Email,
            configured_name: "q".into(),
            name: "q".into(),
            exchange: "x".into(),
            routing_keys: vec!["email.send".into()],
            message_ttl: Duration::from_secs(60),
            max_length: NonZeroU32::new(10).unwrap(),
            concurrency: NonZeroUsize::MIN,
            max_attempts: 5,
            backoff: Backoff::new(vec![Duration::from_secs(1), Duration::from_secs(5)]).unwrap(),
            dead_letter_max_length: 10,
            dead_letter_max_age: Duration::from_secs(60),
        };
        assert_eq!(spec.retry_delay(2), Duration::from_secs(1));
        assert_eq!(spec.retry_delay(3), Duration::from_secs(5));
        assert_eq!(spec.retry_delay(5), Duration::from_secs(5));
        assert_eq!(
            spec.retry_delays(),
            [Duration::from_secs(1), Duration::from_secs(5)]
        );
    }
}
