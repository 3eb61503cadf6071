//! The printed block: one column a transport, so that each figure stands beside the other
//! transports' own.

use crate::Shape;
use crate::load::Delivery;
use crate::sockets::Transport;
use testkit::measure::percentile_ms;

/// What one transport's run measured.
pub struct Figures {
    pub transport: Transport,
    /// Herald's resident memory before any socket, in kB.
    pub idle_kb: u64,
    /// Its resident memory with every socket open, in kB.
    pub connected_kb: u64,
    /// Its peak resident memory over the run (`VmHWM`), in MB.
    pub peak_mb: f64,
    /// What became of the messages.
    pub delivery: Delivery,
}

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
    row("Herald RSS idle (MB)", figures, |f| mb(f.idle_kb));
    row(&format!("  with {connections} open (MB)"), figures, |f| {
        mb(f.connected_kb)
    });
    row("  per connection (KB)", figures, |f| {
        let added = f.connected_kb.saturating_sub(f.idle_kb);
        format!("{:.1}", added as f64 / connections as f64)
    });
    row("Herald peak RSS (MB)", figures, |f| {
        format!("{:.1}", f.peak_mb)
    });
    row("messages sent (202)", figures, |f| {
        f.delivery.sent.to_string()
    });
    row("  not accepted", figures, |f| {
        f.delivery.refused.to_string()
    });
    row("  received", figures, |f| {
        f.delivery.latencies.len().to_string()
    });
    for (name, p) in [("p50", 0.50), ("p99", 0.99)] {
        row(&format!("POST 202 to socket {name} (ms)"), figures, |f| {
            format!("{:.1}", percentile_ms(&f.delivery.latencies, p))
        });
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
