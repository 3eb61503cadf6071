//! CPU accounting, from `/proc`, to see who used the (few) cores during a window: the
//! machine, this process, Herald and RabbitMQ.

use std::time::Instant;
use testkit::measure::{machine_ticks, process_ticks};

/// Clock ticks spent so far: by the machine (busy, and in all), by this process, by
/// Herald and by RabbitMQ.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    busy: u64,
    total: u64,
    bench: u64,
    herald: Option<u64>,
    rabbitmq: Option<u64>,
}

/// Cores used on average over a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub cores: usize,
    pub machine: f64,
    pub bench: f64,
    pub herald: Option<f64>,
    pub rabbitmq: Option<f64>,
}

impl CpuTicks {
    fn now(herald: Option<u32>, rabbitmq: &[u32]) -> Option<Self> {
        let (busy, total) = machine_ticks()?;
        Some(CpuTicks {
            busy,
            total,
            bench: process_ticks("self")?,
            herald: herald.and_then(process_ticks),
            rabbitmq: (!rabbitmq.is_empty())
                .then(|| rabbitmq.iter().filter_map(|&pid| process_ticks(pid)).sum()),
        })
    }

    /// The cores used from `self` to `later`.
    fn until(self, later: CpuTicks) -> Option<CpuUse> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let elapsed = later.total.checked_sub(self.total).filter(|&t| t > 0)? as f64;
        let share =
            |after: u64, before: u64| after.saturating_sub(before) as f64 * cores as f64 / elapsed;
        let optional = |after: Option<u64>, before: Option<u64>| {
            after
                .zip(before)
                .map(|(after, before)| share(after, before))
        };
        Some(CpuUse {
            cores,
            machine: share(later.busy, self.busy),
            bench: share(later.bench, self.bench),
            herald: optional(later.herald, self.herald),
            rabbitmq: optional(later.rabbitmq, self.rabbitmq),
        })
    }
}

/// The processes whose command name is `name`.
fn find_processes(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// The CPU use between `from` and `until`; RabbitMQ's is that of the local `beam.smp`
/// processes (Erlang VMs), if any.
pub async fn cpu_during(from: Instant, until: Instant, herald: Option<u32>) -> Option<CpuUse> {
    let rabbitmq = find_processes("beam.smp");
    tokio::time::sleep_until(from.into()).await;
    let before = CpuTicks::now(herald, &rabbitmq)?;
    tokio::time::sleep_until(until.into()).await;
    before.until(CpuTicks::now(herald, &rabbitmq)?)
}
