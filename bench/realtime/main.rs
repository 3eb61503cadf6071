//! The real-time bench: 10,000 concurrent connections on one Herald instance (`herald
//! serve`, release build, a process of its own, embedded broker and SQLite), over Herald's
//! WebSocket and over Socket.IO (v4, its WebSocket transport), a fresh instance for each:
//! memory per connection, and the latency from a chat message's POST (its 202) to its
//! recipient's socket receiving it, at 1,000 messages a second.
//!
//! Run: `cargo bench --bench realtime`. `HERALD_BENCH_CONNECTIONS` (10,000),
//! `HERALD_BENCH_RATE` (1,000 a second) and `HERALD_BENCH_SECONDS` (10) change the shape,
//! the same for every transport; `HERALD_BENCH_TRANSPORTS` (`websocket,socketio`) chooses
//! the transports and their order. The process needs a file limit of twice the
//! connections (`ulimit -n`), checked first. With `HERALD_BENCH_DATABASE_URL=postgres://...`
//! Herald keeps its store there instead of SQLite.
//!
//! `main.rs` measures one transport after another; `load.rs` sends the messages at the
//! rate and times their arrival; `report.rs` prints the transports side by side. The
//! sockets are `bench/sockets.rs`, shared with the fan-out bench.

mod load;
mod report;
#[path = "../sockets.rs"]
mod sockets;

use report::Figures;
use sockets::Transport;
use std::time::{Duration, Instant};
use testkit::env_or;
use testkit::herald_process::{self, Server};
use testkit::measure::{peak_rss_mb, status_kb};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// Sockets are opened this many at a time.
const OPENING: usize = 100;

/// How long the open connections settle before Herald's memory with them is read.
const SETTLE: Duration = Duration::from_secs(2);

/// What every transport is measured with.
pub struct Shape {
    /// Sockets open at once, one user each.
    pub connections: usize,
    /// Chat messages a second.
    pub rate: usize,
    /// For how long they are sent.
    pub seconds: usize,
}

/// The transports of `HERALD_BENCH_TRANSPORTS`, in its order.
fn transports() -> Vec<Transport> {
    std::env::var("HERALD_BENCH_TRANSPORTS")
        .unwrap_or_else(|_| "websocket,socketio".to_owned())
        .split(',')
        .map(|name| {
            name.parse()
                .unwrap_or_else(|e| panic!("HERALD_BENCH_TRANSPORTS: {e}"))
        })
        .collect()
}

/// One fresh Herald with `shape.connections` sockets over `transport`, then the messages.
async fn measure(transport: Transport, shape: &Shape) -> Figures {
    let dir = tempfile::TempDir::new().unwrap();
    let port = testkit::free_port();
    // A tenant of its own, so that the transports' runs (and later runs) can share one
    // PostgreSQL store without their users and message ids meeting.
    let tenant = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let key = herald_process::create_tenant(HERALD, &tenant, dir.path(), port);
    let serve = herald_process::command(HERALD, &["serve"], dir.path(), port);
    let server = Server::start(serve, port);
    let pid = server.pid();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let idle_kb = status_kb(pid, "VmRSS").unwrap_or(0);

    // Each socket is read (and answers its pings) from the moment it is open, as a
    // client's would be: one left unread past three heartbeats would be closed.
    let arrivals = load::Arrivals::default();
    let mut readers = Vec::with_capacity(shape.connections);
    let users: Vec<String> = (0..shape.connections).map(load::user).collect();
    let opening = Instant::now();
    for chunk in users.chunks(OPENING) {
        let opened = futures_util::future::join_all(
            chunk
                .iter()
                .map(|user| sockets::open(transport, &client, &base, &key, user)),
        )
        .await;
        readers.extend(opened.into_iter().map(|socket| {
            let arrivals = arrivals.clone();
            sockets::on_new_messages(socket, move |id| arrivals.arrived(id))
        }));
    }
    let opening = opening.elapsed();
    eprintln!(
        "{transport}: {} sessions ready, now {} messages a second for {} s",
        shape.connections, shape.rate, shape.seconds
    );
    tokio::time::sleep(SETTLE).await;
    let connected_kb = status_kb(pid, "VmRSS").unwrap_or(0);

    let delivery = load::send(&client, &base, &key, shape, &arrivals).await;
    let peak_mb = peak_rss_mb(pid).unwrap_or(0.0);
    for reader in readers {
        reader.abort();
    }
    drop(server);
    Figures {
        transport,
        idle_kb,
        opening,
        connected_kb,
        peak_mb,
        delivery,
    }
}

#[tokio::main]
async fn main() {
    let shape = Shape {
        connections: env_or("HERALD_BENCH_CONNECTIONS", 10_000),
        rate: env_or("HERALD_BENCH_RATE", 1_000),
        seconds: env_or("HERALD_BENCH_SECONDS", 10),
    };
    let transports = transports();
    sockets::check_file_limit(shape.connections);
    herald::channels::tls::install_default_provider();
    let mut figures = Vec::with_capacity(transports.len());
    for transport in transports {
        figures.push(measure(transport, &shape).await);
    }
    report::print(&shape, &figures);
}
