//! What the benches measure with: percentiles of latencies, and a process's memory, CPU
//! time and file limit as Linux's `/proc` gives them. A process is named as `/proc` names it: by its pid,
//! or `"self"`.

use std::fmt::Display;
use std::time::Duration;

/// The `p` quantile (0 to 1) of `sorted`, by nearest rank: the smallest value with at
/// least a share `p` of the values at or below it; `None` when there are none.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// The `p` quantile of `sorted` durations, in milliseconds; 0 when there are none.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).unwrap_or_default().as_secs_f64() * 1e3
}

/// A field of `/proc/<process>/status` counted in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(process: impl Display, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The peak resident memory (`VmHWM`) of `process`, in MB.
pub fn peak_rss_mb(process: impl Display) -> Option<f64> {
    status_kb(process, "VmHWM").map(|kb| kb as f64 / 1024.0)
}

/// The most files `process` may hold open (the soft limit, `ulimit -n`), which a child
/// it starts inherits.
pub fn open_files_limit(process: impl Display) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{process}/limits")).ok()?;
    // "Max open files            1024                 1048576              files"
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The clock ticks `process` has run so far, in user and system mode.
pub fn process_ticks(process: impl Display) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the first, utime
    // the 12th and stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's clock ticks so far, over all its cores: busy, and in all.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal (guest time is within user).
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_is_the_value_at_its_nearest_rank() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
        let latencies = [Duration::from_micros(1500), Duration::from_millis(3)];
        assert_eq!(percentile_ms(&latencies, 0.5), 1.5);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        assert!(status_kb("self", "VmRSS").is_some_and(|kb| kb > 0));
        assert!(peak_rss_mb("self").is_some_and(|mb| mb > 0.0));
        assert!(status_kb("self", "NoSuchField").is_none());
        assert!(process_ticks("self").is_some());
        assert!(open_files_limit("self").is_some_and(|files| files > 0));
        assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total));
    }
}
