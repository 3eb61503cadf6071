//! The HTTP phases: `SENDERS` keep-alive clients POSTing single audit events, then
//! batches, to the `herald api` child, with its memory, its sockets and its own timings
//! (from its `/metrics`) taken meanwhile.

use crate::child::HeraldProcess;
use crate::load::{Outcome, Run, SENDERS, Schedule, Window, closed_loop};
use crate::message::{BATCH_SIZE, batch_body};
use crate::report::Report;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use testkit::measure::status_kb;
use testkit::seeds::audit_event;

/// A client that holds one keep-alive connection (each sender gets its own).
pub fn http_client() -> reqwest::Client {
    herald::channels::tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()
        .expect("an HTTP client")
}

/// POSTs `body` to `url` and reads the whole answer, so that the connection is reused.
async fn post(
    client: reqwest::Client,
    url: Arc<str>,
    authorization: Arc<str>,
    body: Bytes,
    events: u64,
) -> Outcome {
    let sent = client
        .post(url.as_ref())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::AUTHORIZATION, authorization.as_ref())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            let _ = response.bytes().await;
            if status == reqwest::StatusCode::ACCEPTED {
                Outcome::Accepted(events)
            } else {
                Outcome::Failed(format!("HTTP {}", status.as_u16()))
            }
        }
        Err(e) if e.is_connect() => Outcome::Failed("connect error".into()),
        Err(_) => Outcome::Failed("request error".into()),
    }
}

/// 64 senders, each on its own keep-alive connection, POSTing `body` (`events` events) to
/// `path`, with Herald's RSS and sockets sampled; answers the run and the most sockets.
async fn http_phase(
    herald: &HeraldProcess,
    path: &str,
    body: Bytes,
    events: u64,
    window: Window,
) -> (Run, usize) {
    let clients: Vec<reqwest::Client> = (0..SENDERS).map(|_| http_client()).collect();
    let url: Arc<str> = format!("{}{path}", herald.base_url).into();
    let authorization: Arc<str> = herald.authorization.as_str().into();
    let sampler = Sampler::start(herald.pid());
    let schedule = window.start();
    let times = tokio::spawn(herald_times(
        herald.base_url.clone(),
        path.to_owned(),
        schedule,
    ));
    let mut run = closed_loop(schedule, Some(herald.pid()), move |sender| {
        let client = clients[sender].clone();
        post(
            client,
            url.clone(),
            authorization.clone(),
            body.clone(),
            events,
        )
    })
    .await;
    let (rss_kb, sockets) = sampler.finish();
    run.herald_rss_kb = Some(rss_kb);
    run.herald_times = times.await.ok().flatten();
    (run, sockets)
}

/// Mean times inside Herald over a window, in milliseconds, from its `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct HeraldTimes {
    /// Handling one request, from routing to the answer.
    pub request_ms: f64,
    /// Waiting for the broker to confirm one publish (single events only).
    pub confirm_ms: Option<f64>,
}

/// Running sums and counts of Herald's latency histograms.
#[derive(Debug, Clone, Copy)]
struct HeraldTotals {
    request_sum: f64,
    request_count: f64,
    confirm_sum: f64,
    confirm_count: f64,
}

/// A value of Herald's metrics: the line of `name` carrying the label value `label`.
fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    let label = format!("\"{label}\"");
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l.contains(&label))?;
    line.rsplit(' ').next()?.parse().ok()
}

async fn herald_totals(base_url: &str, route: &str) -> Option<HeraldTotals> {
    let asking = http_client().get(format!("{base_url}/metrics")).send();
    let response = tokio::time::timeout(Duration::from_secs(2), asking)
        .await
        .ok()?
        .ok()?;
    let text = response.text().await.ok()?;
    let value = |name: &str, label: &str| metric(&text, name, label).unwrap_or(0.0);
    let request = "herald_http_request_duration_seconds";
    let confirm = "herald_queue_confirm_duration_seconds";
    Some(HeraldTotals {
        request_sum: value(&format!("{request}_sum"), route),
        request_count: value(&format!("{request}_count"), route),
        confirm_sum: value(&format!("{confirm}_sum"), "audit.events"),
        confirm_count: value(&format!("{confirm}_count"), "audit.events"),
    })
}

/// Herald's mean request and confirm times over `schedule`'s window, for `route`.
async fn herald_times(base_url: String, route: String, schedule: Schedule) -> Option<HeraldTimes> {
    tokio::time::sleep_until(schedule.from.into()).await;
    let before = herald_totals(&base_url, &route).await?;
    tokio::time::sleep_until(schedule.until.into()).await;
    let after = herald_totals(&base_url, &route).await?;
    let mean = |sum: f64, count: f64| (count > 0.0).then(|| sum / count * 1000.0);
    Some(HeraldTimes {
        request_ms: mean(
            after.request_sum - before.request_sum,
            after.request_count - before.request_count,
        )?,
        confirm_ms: mean(
            after.confirm_sum - before.confirm_sum,
            after.confirm_count - before.confirm_count,
        ),
    })
}

/// Peak memory and sockets of a process, sampled every 100 ms on a thread of its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut rss_kb, mut sockets) = (0, 0);
            while !stopping.load(Ordering::Relaxed) {
                rss_kb = rss_kb.max(status_kb(pid, "VmRSS").unwrap_or(0));
                sockets = sockets.max(socket_count(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            (rss_kb, sockets)
        });
        Sampler { stop, thread }
    }

    /// Stops sampling: the peak sampled RSS in kB, and the most sockets.
    fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// How many sockets the process has open (its listener, broker and client connections).
fn socket_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// TCP connections to or from `port` in TIME_WAIT, i.e. closed in the last minute. Clients
/// that keep their connections alive leave none; one that reconnected per request would
/// leave one per request.
fn closed_connections(port: u16) -> usize {
    let port_of = |address: &str| {
        let hex = address.rsplit(':').next()?;
        u16::from_str_radix(hex, 16).ok()
    };
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let &[_, local, remote, state, ..] = fields.as_slice() else {
                continue;
            };
            let ours = port_of(local) == Some(port) || port_of(remote) == Some(port);
            if ours && state == "06" {
                count += 1;
            }
        }
    }
    count
}

/// Starts Herald, measures single events then batches over HTTP, and stops it.
pub async fn bench_http(
    report: &mut Report,
    prefix: &str,
    env: &[(&str, String)],
    dir: &Path,
    window: Window,
) {
    let mut herald = match HeraldProcess::spawn(dir, prefix, env).await {
        Ok(herald) => herald,
        Err(e) => return report.notes.push(format!("herald did not start: {e}")),
    };
    if let Err(e) = herald.wait_ready().await {
        report.notes.push(format!("herald was not ready: {e}"));
        if let Some(note) = herald.stop().await {
            report.notes.push(note);
        }
        return;
    }
    let single = serde_json::to_vec(&audit_event()).expect("JSON serializes");
    println!("[{}] HTTP single events...", report.broker);
    let (run, single_sockets) =
        http_phase(&herald, "/v1/audit/events", single.into(), 1, window).await;
    report.single = Some(run);
    println!("[{}] HTTP batches of {BATCH_SIZE}...", report.broker);
    let events = BATCH_SIZE as u64;
    let (run, batch_sockets) = http_phase(&herald, "/v1/batch", batch_body(), events, window).await;
    report.batch = Some(run);
    report.high_water_kb = status_kb(herald.pid(), "VmHWM");
    report.peak_sockets = Some(single_sockets.max(batch_sockets));
    report.closed_connections = Some(closed_connections(herald.port));
    let warnings = std::fs::read_to_string(&herald.stderr_path)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    if warnings > 0 {
        report.notes.push(format!(
            "herald logged {warnings} lines at warn or above; last: {}",
            herald.stderr_tail()
        ));
    }
    if let Some(note) = herald.stop().await {
        report.notes.push(note);
    }
}
