//! The fan-out bench: one chat message sent without `recipientIds` to a conversation of
//! 10,000 members, every one of them connected over WebSocket to one Herald (`herald
//! serve`, release build, a process of its own, embedded broker and SQLite): the time from
//! the POST to the last member's socket having it, median of three messages, and Herald's
//! peak RSS, which shows that the members are read a page at a time.
//!
//! Run: `cargo bench --bench fanout`. `HERALD_BENCH_MEMBERS` (10,000) changes the size;
//! the process needs a file limit of twice the members (`ulimit -n`), checked first. With
//! `HERALD_BENCH_DATABASE_URL=postgres://...` Herald keeps its store there instead of SQLite.

#[path = "sockets.rs"]
mod sockets;

use serde_json::json;
use sockets::Transport;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::env_or;
use testkit::herald_process::{self, Server};
use testkit::measure::{peak_rss_mb, status_kb};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// Messages sent, one after another: the figure is their median.
const RUNS: usize = 3;

/// For each message, how many members have it and when the last one got it.
type Arrivals = Arc<Mutex<HashMap<String, (usize, Instant)>>>;

/// Opens `user`'s socket and counts the chat messages it receives into `arrivals`.
async fn member(
    client: reqwest::Client,
    base: String,
    key: String,
    user: String,
    arrivals: Arrivals,
) {
    let socket = sockets::open(Transport::WebSocket, &client, &base, &key, &user).await;
    sockets::on_new_messages(socket, move |id| {
        let mut arrivals = arrivals.lock().unwrap();
        let entry = arrivals.entry(id).or_insert((0, Instant::now()));
        *entry = (entry.0 + 1, Instant::now());
    });
}

async fn run() {
    let members = env_or("HERALD_BENCH_MEMBERS", 10_000);
    sockets::check_file_limit(members);
    herald::channels::tls::install_default_provider();
    let dir = tempfile::TempDir::new().unwrap();
    let port = testkit::free_port();
    let key = herald_process::create_tenant(HERALD, "bench", dir.path(), port);
    let serve = herald_process::command(HERALD, &["serve"], dir.path(), port);
    let server = Server::start(serve, port);
    let pid = server.pid();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let users: Vec<String> = (0..members).map(|i| format!("u{i:05}")).collect();
    let defined = client
        .put(format!("{base}/v1/conversations/everyone"))
        .bearer_auth(&key)
        .json(&json!({"type": "group", "members": users}))
        .send()
        .await
        .unwrap();
    assert!(
        defined.status().is_success(),
        "{}",
        defined.text().await.unwrap()
    );
    let idle_rss = status_kb(pid, "VmRSS").unwrap_or(0);

    // Every member but the sender (u00000) connected, 100 sockets at a time.
    let arrivals: Arrivals = Arc::default();
    for chunk in users[1..].chunks(100) {
        futures_util::future::join_all(chunk.iter().map(|user| {
            member(
                client.clone(),
                base.clone(),
                key.clone(),
                user.clone(),
                arrivals.clone(),
            )
        }))
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected_rss = status_kb(pid, "VmRSS").unwrap_or(0);
    let receivers = members - 1;
    println!(
        "fanout bench: one chat message to a conversation of {members} members, {receivers} of them on WebSocket"
    );

    let mut times = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let id = format!("fanout-{run}");
        let sent = Instant::now();
        let response = client
            .post(format!("{base}/v1/chat/messages"))
            .bearer_auth(&key)
            .json(&json!({
                "messageId": id, "conversationId": "everyone", "senderId": users[0],
                "content": "to everyone",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let last = loop {
            let done = arrivals.lock().unwrap().get(&id).copied();
            match done {
                Some((count, at)) if count >= receivers => break Some(at),
                _ if sent.elapsed() > Duration::from_secs(120) => break None,
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let count = arrivals.lock().unwrap().get(&id).map_or(0, |a| a.0);
        let Some(last) = last else {
            panic!("{id}: only {count} of {receivers} members got it within 120 s");
        };
        let took = last.saturating_duration_since(sent);
        println!(
            "  message {run}: POST to the last of {count} members {:>8.1} ms",
            took.as_secs_f64() * 1000.0
        );
        times.push(took);
    }
    times.sort();
    println!(
        "  median of {RUNS}      {:>8.1} ms to the last member ({:.0} members a second)",
        times[RUNS / 2].as_secs_f64() * 1000.0,
        receivers as f64 / times[RUNS / 2].as_secs_f64()
    );
    println!(
        "  Herald RSS           {:>8.1} MB idle, {:>8.1} MB connected, {:>8.1} MB peak",
        idle_rss as f64 / 1024.0,
        connected_rss as f64 / 1024.0,
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
