//! Load generation: closed loops of concurrent senders (each awaits its operation before
//! starting the next), counted over a fixed window after a warm-up.

use crate::cpu::{CpuUse, cpu_during};
use crate::http::HeraldTimes;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::measure::percentile;

/// Concurrent senders in every phase, raw or HTTP.
pub const SENDERS: usize = 64;
/// Load before measuring starts.
const WARM_UP: Duration = Duration::from_secs(2);
/// The longest one publish or request may take before it counts as a timeout.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// When a phase measures: after `warm_up`, for `measure`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warm_up: Duration,
    pub measure: Duration,
}

impl Window {
    pub fn from_env() -> Self {
        let seconds = std::env::var("HERALD_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .unwrap_or(10);
        Window {
            warm_up: WARM_UP,
            measure: Duration::from_secs(seconds),
        }
    }

    /// The window of a phase that starts now.
    pub fn start(self) -> Schedule {
        let from = Instant::now() + self.warm_up;
        Schedule {
            from,
            until: from + self.measure,
        }
    }
}

/// When a phase that has started measures: from `from` to `until`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub from: Instant,
    pub until: Instant,
}

/// How one publish or request ended.
pub enum Outcome {
    /// Accepted, carrying this many events.
    Accepted(u64),
    /// Not accepted, for this reason (an HTTP status, `timeout`, `nack`...).
    Failed(String),
}

/// What one phase measured, over its window.
#[derive(Debug, Default)]
pub struct Run {
    /// Events accepted within the window.
    pub events: u64,
    /// Latency of each accepted operation within the window, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Operations not accepted within the window, by reason.
    pub failures: BTreeMap<String, u64>,
    /// The window's length.
    pub seconds: f64,
    /// How busy the CPUs were during the window.
    pub cpu: Option<CpuUse>,
    /// Herald's peak RSS during the phase (warm-up included), in kB.
    pub herald_rss_kb: Option<u64>,
    /// Where Herald's time went during the window, from its own metrics.
    pub herald_times: Option<HeraldTimes>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn merge(&mut self, other: Run) {
        self.events += other.events;
        self.latencies_us.extend(other.latencies_us);
        for (reason, count) in other.failures {
            *self.failures.entry(reason).or_default() += count;
        }
    }

    pub fn mean_ms(&self) -> Option<f64> {
        let count = self.latencies_us.len();
        (count > 0).then(|| self.latencies_us.iter().sum::<u64>() as f64 / count as f64 / 1000.0)
    }

    /// The mean time a request spent outside Herald: the client's mean latency less the
    /// mean time inside Herald.
    pub fn http_hop(&self) -> Option<Duration> {
        let inside = self.herald_times?.request_ms;
        let hop_ms = self.mean_ms()? - inside;
        (hop_ms > 0.0).then(|| Duration::from_secs_f64(hop_ms / 1e3))
    }

    /// The `q` quantile of the latencies, in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        percentile(&sorted, q).map(|us| us as f64 / 1000.0)
    }
}

/// Runs `SENDERS` closed loops of `op(sender)` (each awaits its operation before starting
/// the next) and counts the operations that end within the window. The CPU use of the
/// machine, of this process and of `herald` (a process id) is measured over the window.
pub async fn closed_loop<F, Fut>(schedule: Schedule, herald: Option<u32>, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let op = Arc::new(op);
    let Schedule { from, until } = schedule;
    let cpu = tokio::spawn(cpu_during(from, until, herald));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut run = Run::default();
                while Instant::now() < until {
                    let began = Instant::now();
                    let outcome = tokio::time::timeout(OP_TIMEOUT, op(sender))
                        .await
                        .unwrap_or_else(|_| Outcome::Failed("timeout".into()));
                    let ended = Instant::now();
                    if ended < from || ended > until {
                        continue;
                    }
                    match outcome {
                        Outcome::Accepted(events) => {
                            run.events += events;
                            run.latencies_us.push((ended - began).as_micros() as u64);
                        }
                        Outcome::Failed(reason) => *run.failures.entry(reason).or_default() += 1,
                    }
                }
                run
            })
        })
        .collect();
    let mut total = Run {
        seconds: (until - from).as_secs_f64(),
        cpu: cpu.await.ok().flatten(),
        ..Run::default()
    };
    for sender in senders {
        match sender.await {
            Ok(run) => total.merge(run),
            Err(e) => {
                *total
                    .failures
                    .entry(format!("sender died: {e}"))
                    .or_default() += 1
            }
        }
    }
    total
}
