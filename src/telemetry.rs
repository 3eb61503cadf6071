//! Logs and Prometheus metrics, and URLs redacted for logs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Starts logging to stderr, filtered by `RUST_LOG` (default `info`); coloured only on a
/// terminal, so that files and log collectors get plain text.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!(
                "{}{user}:***{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            )
        }
        None => url.to_owned(),
    }
}

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method.
    pub method: String,
    /// The matched route (`/v1/chat/messages`), never the raw path, to bound cardinality.
    pub route: String,
    /// The response status.
    pub status: u16,
}

/// Labels of an HTTP route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route.
    pub route: String,
}

/// Labels of a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue's configured name.
    pub queue: String,
}

/// Labels of a queue and what happened there.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueOutcomeLabels {
    /// The queue's configured name.
    pub queue: String,
    /// What happened (`confirmed`, `nacked`, `delivered`, `retry`, ...).
    pub outcome: String,
}

/// Labels of dead letters dropped to keep a dead-letter queue within its bounds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    /// The queue's configured name.
    pub queue: String,
    /// The bound that dropped them: `length` or `age`.
    pub bound: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric Herald exports at `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// HTTP request latency.
    pub request_seconds: Family<RouteLabels, Histogram>,
    /// Publishes to the broker, by outcome: `confirmed`, `nacked`, `full`, `unroutable`,
    /// `timeout`, `unavailable`.
    pub publishes: Family<QueueOutcomeLabels, Counter>,
    /// Time from publish to broker confirmation.
    pub confirm_seconds: Family<QueueLabels, Histogram>,
    /// Messages handled by worker pools, by outcome.
    pub handled: Family<QueueOutcomeLabels, Counter>,
    /// Handler latency.
    pub handler_seconds: Family<QueueLabels, Histogram>,
    /// Dead letters dropped to keep their queue within its bounds.
    pub dead_letters_dropped: Family<DroppedLabels, Counter>,
    /// Messages in the unrouted queue (RabbitMQ): published with a routing key no queue
    /// is bound for; read when metrics are scraped.
    pub unrouted: Gauge,
}

impl Metrics {
    /// Registers every metric under the `herald_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("herald");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            request_seconds.clone(),
        );
        let publishes = Family::<QueueOutcomeLabels, Counter>::default();
        registry.register(
            "queue_publishes",
            "Events published to the broker, by outcome",
            publishes.clone(),
        );
        let confirm_seconds =
            Family::<QueueLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "queue_confirm_duration_seconds",
            "Time from publish to broker confirmation",
            confirm_seconds.clone(),
        );
        let handled = Family::<QueueOutcomeLabels, Counter>::default();
        registry.register(
            "handler_outcomes",
            "Messages handled by worker pools, by outcome",
            handled.clone(),
        );
        let handler_seconds =
            Family::<QueueLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "handler_duration_seconds",
            "Time a handler took with one message",
            handler_seconds.clone(),
        );
        let dead_letters_dropped = Family::<DroppedLabels, Counter>::default();
        registry.register(
            "dead_letters_dropped",
            "Dead letters dropped because their queue was over its length or they were past its age",
            dead_letters_dropped.clone(),
        );
        let unrouted = Gauge::default();
        registry.register(
            "unrouted_messages",
            "Messages published with a routing key no queue is bound for, kept in the unrouted queue",
            unrouted.clone(),
        );
        Metrics {
            registry,
            dead_letters_dropped,
            unrouted,
            requests,
            request_seconds,
            publishes,
            confirm_seconds,
            handled,
            handler_seconds,
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts one publish outcome for `queue`.
    pub fn publish(&self, queue: &str, outcome: &str) {
        self.publishes
            .get_or_create(&QueueOutcomeLabels {
                queue: queue.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_url_keeps_everything_but_the_password() {
        assert_eq!(
            redact_url("amqp://u:hunter2@rabbit/%2f"),
            "amqp://u:***@rabbit/%2f"
        );
        assert_eq!(
            redact_url("sqlite://data/herald.db"),
            "sqlite://data/herald.db"
        );
    }
}
