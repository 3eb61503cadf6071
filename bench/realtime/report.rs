//! The printed block: one column a transport, so that each figure stands beside the other
//! transports' own.

use crate::Shape;
use crate::load::Delivery;
use crate::sockets::Transport;
use std::time::Duration;
use testkit::measure::percentile_ms;

/// What one transport's run measured.
pub struct Figures {
    pub transport: Transport,
    /// Herald's resident memory before any socket, in kB.
    pub idle_kb: u64,
    /// How long the sockets took to open and their sessions to be ready,
    /// [`OPENING`](crate::OPENING) at a time.
    pub opening: Duration,
    /// Its resident memory with every socket open, in kB.
    pub connected_kb: u64,
    /// Its peak resident memory over the run (`VmHWM`), in MB.
    pub peak_mb: f64,
    /// What became of the messages.
    pub delivery: Delivery,
}

/// One of a delivery's sorted times.
type Times = fn(&Delivery) -> &[Duration];

/// Prints the figures of every transport measured with `shape`.
pub fn print(shape: &Shape, figures: &[Figures]) {
    let store = match std::env::var("HERALD_BENCH_DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => "PostgreSQL",
        _ => "SQLite",
    };
    let Shape {
        connections,
        rate,
        seconds,
    } = *shape;
    println!(
        "realtime bench: {connections} connections on one instance, {rate} messages/s for \
         {seconds} s, store {store}"
    );
    row("", figures, |f| f.transport.to_string());
    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    let s = |time: Duration| format!("{:.1}", time.as_secs_f64());
    row("Herald RSS idle (MB)", figures, |f| mb(f.idle_kb));
    row(&format!("  with {connections} open (MB)"), figures, |f| {
        mb(f.connected_kb)
    });
    row("  per connection (KB)", figures, |f| {
        let added = f.connected_kb.saturating_sub(f.idle_kb);
        format!("{:.1}", added as f64 / connections as f64)
    });
    row("  sockets ready in (s)", figures, |f| s(f.opening));
    row("Herald peak RSS (MB)", figures, |f| {
        format!("{:.1}", f.peak_mb)
    });
    row("messages accepted (202)", figures, |f| {
        f.delivery.answers.len().to_string()
    });
    row("  not accepted", figures, |f| {
        f.delivery.refused.values().sum::<usize>().to_string()
    });
    row("  received", figures, |f| {
        f.delivery.latencies.len().to_string()
    });
    row("  last POST done after (s)", figures, |f| {
        s(f.delivery.posting)
    });
    row("  then waited for arrivals (s)", figures, |f| {
        s(f.delivery.straggling)
    });
    let times: [(&str, Times); 2] = [
        ("POST to its 202", |d| &d.answers),
        ("202 to socket", |d| &d.latencies),
    ];
    for (between, times) in times {
        for (name, p) in [("p50", 0.50), ("p99", 0.99)] {
            row(&format!("{between} {name} (ms)"), figures, |f| {
                format!("{:.1}", percentile_ms(times(&f.delivery), p))
            });
        }
    }
    for f in figures.iter().filter(|f| !f.delivery.refused.is_empty()) {
        let why: Vec<String> = f
            .delivery
            .refused
            .iter()
            .map(|(why, count)| format!("{why} {count}"))
            .collect();
        println!("  {} not accepted: {}", f.transport, why.join(", "));
    }
}

/// One line: `label`, then each transport's `value`.
fn row(label: &str, figures: &[Figures], value: impl Fn(&Figures) -> String) {
    let values: String = figures
        .iter()
        .map(|f| format!("{:>12}", value(f)))
        .collect();
    println!("  {label:<32}{values}");
}
