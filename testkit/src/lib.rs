//! What Herald's integration tests (`tests/it`) and benches (`bench/`) share, as a crate
//! of its own that both take as a dev-dependency, rather than files one includes from the
//! other's tree:
//!
//! - [`seeds`]: events as the seed services send them;
//! - [`keys`]: key material made with the `openssl` command;
//! - [`push_providers`]: stand-ins for APNs, FCM and Google's token endpoint, as real
//!   servers;
//! - [`measure`]: percentiles, and a process's memory, CPU time and file limit from
//!   `/proc`;
//! - [`herald_process`]: `herald` run as a process of its own, for the benches.
//!
//! It does not depend on Herald, so that it builds alongside it rather than after it.

pub mod herald_process;
pub mod keys;
pub mod measure;
pub mod push_providers;
pub mod seeds;

/// A port nothing listens on now, for a process the caller starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The number in the environment variable `name`, or `default` when it is unset or not a
/// number.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
