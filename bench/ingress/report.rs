//! The report: one block per broker, its rates, ratios, latencies, where the CPU went and
//! Herald's memory and sockets, with the targets on RabbitMQ and whether each is met.

use crate::cpu::CpuUse;
use crate::load::{Run, SENDERS};
use crate::message::{BATCH_SIZE, audit_envelope};
use std::time::Duration;

/// Everything measured for one broker.
pub struct Report {
    pub broker: String,
    pub body_bytes: usize,
    pub raw: Option<Run>,
    /// The raw rate with each publisher pausing as long as the HTTP hop, and that pause.
    pub raw_paused: Option<(Run, Duration)>,
    pub single: Option<Run>,
    pub batch: Option<Run>,
    pub high_water_kb: Option<u64>,
    pub peak_sockets: Option<usize>,
    pub closed_connections: Option<usize>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(broker: String) -> Self {
        Report {
            broker,
            body_bytes: audit_envelope().0.len(),
            raw: None,
            raw_paused: None,
            single: None,
            batch: None,
            high_water_kb: None,
            peak_sockets: None,
            closed_connections: None,
            notes: Vec::new(),
        }
    }

    /// Herald's peak RSS in kB: the most sampled in either HTTP phase, or its `VmHWM`.
    fn peak_rss_kb(&self) -> Option<u64> {
        [&self.single, &self.batch]
            .into_iter()
            .filter_map(|run| run.as_ref()?.herald_rss_kb)
            .chain(self.high_water_kb)
            .max()
    }

    /// `run`'s rate over the raw rate.
    fn ratio(&self, run: Option<&Run>) -> Option<f64> {
        let raw = self.raw.as_ref()?.rate();
        let rate = run?.rate();
        (raw > 0.0).then_some(rate / raw)
    }

    /// Prints the block; `with_targets` adds the RabbitMQ targets and whether each is met.
    pub fn print(&self, with_targets: bool) {
        println!("\n=== {} ===", self.broker);
        println!(
            "  message body            {} bytes (Herald's audit envelope)",
            self.body_bytes
        );
        print_rate("raw broker rate", "msgs/s", self.raw.as_ref());
        print_rate("HTTP single rate", "events/s", self.single.as_ref());
        print_ratio(
            "ratio single/raw",
            self.ratio(self.single.as_ref()),
            with_targets.then_some(0.8),
        );
        if let Some((paused, hop)) = &self.raw_paused {
            print_rate(
                &format!("raw, pausing {:.2} ms", hop.as_secs_f64() * 1e3),
                "msgs/s",
                Some(paused),
            );
            println!(
                "                          (each publisher waits as long as the HTTP hop above before each publish)"
            );
            let single = self.single.as_ref().map(Run::rate);
            if let Some(single) = single.filter(|_| paused.rate() > 0.0) {
                println!(
                    "  ratio single/paused raw {:>8.2}x   (Herald's own cost; the rest of the gap is the hop)",
                    single / paused.rate()
                );
            }
        }
        print_rate(
            &format!("HTTP batch-{BATCH_SIZE} rate"),
            "events/s",
            self.batch.as_ref(),
        );
        print_ratio(
            "ratio batch/raw",
            self.ratio(self.batch.as_ref()),
            with_targets.then_some(0.95),
        );
        let rss_mb = self.peak_rss_kb().map(|kb| kb as f64 / 1024.0);
        match rss_mb {
            Some(mb) => {
                let hwm = self
                    .high_water_kb
                    .map_or("?".into(), |kb| format!("{:.1}", kb as f64 / 1024.0));
                let target = if with_targets {
                    verdict(mb < 100.0, "< 100 MB")
                } else {
                    String::new()
                };
                println!("  peak RSS (herald api)   {mb:.1} MB (VmHWM {hwm} MB){target}");
            }
            None => println!("  peak RSS (herald api)   n/a"),
        }
        if let Some(sockets) = self.peak_sockets {
            println!(
                "  herald sockets (peak)   {sockets} (listener + broker + client connections)"
            );
        }
        if let Some(closed) = self.closed_connections {
            // Each phase's senders close their one connection each when the phase ends;
            // the readiness probe and the four /metrics scrapes close one each.
            let expected = 2 * SENDERS + 1 + 4;
            println!(
                "  closed HTTP connections {closed} in TIME_WAIT ({expected} if every sender kept one connection)"
            );
        }
        println!(
            "  non-202 answers         single {}, batch {}",
            failures(self.single.as_ref()),
            failures(self.batch.as_ref())
        );
        if let Some(raw) = self.raw.as_ref().filter(|r| r.failed() > 0) {
            println!("  raw failures            {}", failures(Some(raw)));
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
    }
}

fn print_rate(label: &str, unit: &str, run: Option<&Run>) {
    let Some(run) = run else {
        return println!("  {label:<23} n/a");
    };
    let ms = |q| {
        run.percentile_ms(q)
            .map_or("n/a".into(), |v| format!("{v:.2} ms"))
    };
    println!(
        "  {label:<23} {:>9.0} {unit:<9} p50 {:>9}  p99 {:>9}",
        run.rate(),
        ms(0.50),
        ms(0.99)
    );
    let mut detail = Vec::new();
    if let Some(cpu) = run.cpu {
        detail.push(cpu_line(&cpu));
    }
    if let (Some(times), Some(client)) = (run.herald_times, run.mean_ms()) {
        let confirm = times
            .confirm_ms
            .map_or(String::new(), |c| format!(" (broker confirm {c:.2})"));
        detail.push(format!(
            "mean ms: client {client:.2}, inside herald {:.2}{confirm}",
            times.request_ms
        ));
    }
    if let Some(kb) = run.herald_rss_kb {
        detail.push(format!("herald RSS {:.1} MB", kb as f64 / 1024.0));
    }
    for line in detail {
        println!("  {:<23} {line}", "");
    }
}

/// `cpu 1.90 of 2 cores busy: herald 0.50, bench 0.60, rabbitmq 0.70, other 0.10`.
fn cpu_line(cpu: &CpuUse) -> String {
    let parts = [
        ("herald", cpu.herald),
        ("bench", Some(cpu.bench)),
        ("rabbitmq", cpu.rabbitmq),
    ];
    let known: f64 = parts.iter().filter_map(|(_, cores)| *cores).sum();
    let mut shares: Vec<String> = parts
        .iter()
        .filter_map(|(name, cores)| Some(format!("{name} {:.2}", (*cores)?)))
        .collect();
    shares.push(format!("other {:.2}", (cpu.machine - known).max(0.0)));
    format!(
        "cpu {:.2} of {} cores busy: {}",
        cpu.machine,
        cpu.cores,
        shares.join(", ")
    )
}

fn print_ratio(label: &str, ratio: Option<f64>, target: Option<f64>) {
    let Some(ratio) = ratio else {
        return println!("  {label:<23} n/a");
    };
    let verdict = target.map_or(String::new(), |t| {
        verdict(ratio >= t, &format!(">= {t:.2}x raw"))
    });
    println!("  {label:<23} {ratio:>9.2}x{verdict}");
}

fn verdict(met: bool, target: &str) -> String {
    format!(
        "   target {target}: {}",
        if met { "met" } else { "NOT met" }
    )
}

/// `total (reason count, ...)` of the failures of `run`.
fn failures(run: Option<&Run>) -> String {
    let Some(run) = run else { return "n/a".into() };
    if run.failures.is_empty() {
        return "0".into();
    }
    let reasons: Vec<String> = run
        .failures
        .iter()
        .map(|(reason, count)| format!("{reason}: {count}"))
        .collect();
    format!("{} ({})", run.failed(), reasons.join(", "))
}
