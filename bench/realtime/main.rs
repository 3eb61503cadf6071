//! The real-time bench: 10,000 concurrent WebSocket connections on one Herald instance
//! (`herald serve`, release build, a process of its own, embedded broker and SQLite):
//! memory per connection, and the latency from a chat message's POST (its 202) to its
//! recipient's socket receiving it, at 1,000 messages a second.
//!
//! Run: `cargo bench --bench realtime`. `HERALD_BENCH_CONNECTIONS` (10,000),
//! `HERALD_BENCH_RATE` (1,000 a second) and `HERALD_BENCH_SECONDS` (10) change the shape.
//! The process needs a file limit above twice the connections (`ulimit -n`). With
//! `HERALD_BENCH_DATABASE_URL=postgres://...` Herald keeps its store there instead of SQLite.

#[path = "sockets.rs"]
mod sockets;

use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::env_or;
use testkit::herald_process::{self, Server};
use testkit::measure::{peak_rss_mb, percentile_ms, status_kb};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

async fn run() {
    let connections = env_or("HERALD_BENCH_CONNECTIONS", 10_000);
    let rate = env_or("HERALD_BENCH_RATE", 1_000);
    let seconds = env_or("HERALD_BENCH_SECONDS", 10);
    herald::channels::tls::install_default_provider();
    let dir = tempfile::TempDir::new().unwrap();
    let port = testkit::free_port();
    let key = herald_process::create_tenant(HERALD, "bench", dir.path(), port);
    let serve = herald_process::command(HERALD, &["serve"], dir.path(), port);
    let server = Server::start(serve, port);
    let pid = server.pid();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let idle_rss = status_kb(pid, "VmRSS").unwrap_or(0);

    // Tokens, then sockets, 100 at a time.
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut opened_sockets = Vec::with_capacity(connections);
    let users: Vec<String> = (0..connections).map(|i| format!("u{i}")).collect();
    for chunk in users.chunks(100) {
        let opened = futures_util::future::join_all(
            chunk
                .iter()
                .map(|user| sockets::open(&client, &base, &key, user)),
        )
        .await;
        opened_sockets.extend(opened);
    }
    for socket in opened_sockets {
        let received = received.clone();
        sockets::on_new_messages(socket, move |id| {
            received.lock().unwrap().insert(id, Instant::now());
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected_rss = status_kb(pid, "VmRSS").unwrap_or(0);
    println!("realtime bench: {connections} WebSocket connections on one instance");
    println!(
        "  Herald RSS           {:>8.1} MB idle, {:>8.1} MB with {connections} connections",
        idle_rss as f64 / 1024.0,
        connected_rss as f64 / 1024.0
    );
    println!(
        "  per connection       {:>8.1} KB",
        (connected_rss.saturating_sub(idle_rss)) as f64 / connections as f64
    );

    // Chat messages to one recipient each, at `rate` a second.
    let total = rate * seconds;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut posts = Vec::new();
    for n in 0..total / per_tick {
        tick.tick().await;
        for k in 0..per_tick {
            let i = n * per_tick + k;
            let (client, base, key, sent) =
                (client.clone(), base.clone(), key.clone(), sent.clone());
            posts.push(tokio::spawn(async move {
                let id = format!("m{i}");
                let response = client
                    .post(format!("{base}/v1/chat/messages"))
                    .bearer_auth(&key)
                    .json(&json!({
                        "messageId": id, "conversationId": format!("c{}", i % 500),
                        "senderId": "bench", "recipientIds": [format!("u{}", (i * 7919) % connections)],
                        "content": "hello", "messageType": "text", "timestamp": "2026-11-23T10:00:00Z",
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                sent.lock().unwrap().insert(id, Instant::now());
            }));
        }
    }
    for post in posts {
        post.await.unwrap();
    }
    let waiting = Instant::now();
    while received.lock().unwrap().len() < total && waiting.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (sent, received) = (sent.lock().unwrap(), received.lock().unwrap());
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, at)| Some(received.get(id)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    println!(
        "  {total} messages at {rate}/s: {} received; POST 202 to socket p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99)
    );
    println!(
        "  Herald peak RSS      {:>8.1} MB",
        peak_rss_mb(pid).unwrap_or(0.0)
    );
    drop(server);
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
