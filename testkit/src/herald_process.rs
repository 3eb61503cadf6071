//! `herald` run as a process of its own, as the benches measure it: its command with a
//! clean environment, a tenant made with `herald tenant create`, and a server stopped with
//! SIGTERM when dropped. The binary's path is the caller's (`env!("CARGO_BIN_EXE_herald")`
//! exists only in Herald's own targets).

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `binary` with `args` in `dir`, listening on `port`, with no rate limit and only
/// warnings logged; `HERALD_BENCH_DATABASE_URL`, if set, is its store.
pub fn command(binary: &str, args: &[&str], dir: &Path, port: u16) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("HERALD__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("HERALD__RATE_LIMITS__PER_SECOND", "1000000")
        .env("HERALD__RATE_LIMITS__BURST", "1000000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if let Ok(url) = std::env::var("HERALD_BENCH_DATABASE_URL") {
        command.env("DATABASE_URL", url);
    }
    command
}

/// Creates tenant `id` in the store of `dir`; answers its API key.
pub fn create_tenant(binary: &str, id: &str, dir: &Path, port: u16) -> String {
    let created = command(binary, &["tenant", "create", id], dir, port)
        .output()
        .expect("herald tenant create runs");
    String::from_utf8_lossy(&created.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("api key (shown once):")
                .map(|k| k.trim().to_owned())
        })
        .expect("the tenant's key is printed")
}

/// A running `herald serve`, stopped (SIGTERM, then waited for) when dropped.
pub struct Server(pub Child);

impl Server {
    /// Starts `command`, its output discarded, and waits (30 s at most) until it
    /// listens on `port`.
    pub fn start(mut command: Command, port: u16) -> Server {
        let server = Server(
            command
                .stdout(Stdio::null())
                .spawn()
                .expect("herald serve starts"),
        );
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "Herald did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }

    /// Its process id, for `/proc` readings.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
