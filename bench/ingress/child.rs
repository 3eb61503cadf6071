//! Herald as a child process: the release `herald` binary in a directory of its own,
//! configured through its environment only, its tenant created with `herald tenant
//! create`, stopped with SIGTERM.

use crate::http::http_client;
use crate::{DEFAULTS, MAX_LENGTH};
use figment::Figment;
use figment::providers::{Format, Toml};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Herald may take to answer `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The tenant the bench sends as: the audit events carry `"tenantId": 1`.
pub const TENANT: &str = "1";
/// The per-tenant rate limit the bench runs Herald with: high enough never to answer 429,
/// since the bench measures ingress capacity, not the limiter's refusals.
const UNLIMITED: u32 = 1_000_000_000;

/// A running `herald api`, stopped with SIGTERM.
pub struct HeraldProcess {
    child: Child,
    pub port: u16,
    pub base_url: String,
    /// `Bearer <the tenant's API key>`.
    pub authorization: String,
    pub stderr_path: std::path::PathBuf,
}

/// `herald <args>` in `dir`, with only Herald's environment: the listen address, the
/// prefix, the audit queue's length, warnings only, and `env`.
fn herald_command(
    args: &[&str],
    dir: &Path,
    listen: &str,
    prefix: &str,
    env: &[(&str, String)],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("HERALD__HTTP__LISTEN", listen)
        .env("HERALD__BROKER__PREFIX", prefix)
        .env("HERALD__QUEUES__AUDIT__MAX_LENGTH", MAX_LENGTH.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if has_rate_limits() {
        command
            .env("HERALD__RATE_LIMITS__PER_SECOND", UNLIMITED.to_string())
            .env("HERALD__RATE_LIMITS__BURST", UNLIMITED.to_string());
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Whether this Herald has per-tenant rate limits (which the bench lifts).
pub fn has_rate_limits() -> bool {
    Figment::from(Toml::string(DEFAULTS))
        .find_value("rate_limits.per_second")
        .is_ok()
}

/// Creates the bench's tenant with `herald tenant create` and answers its API key.
async fn create_tenant(mut command: Command) -> Result<String, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running herald tenant create: {e}"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("herald tenant create did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("api key (shown once):"))
        .map(|key| key.trim().to_owned())
        .ok_or_else(|| {
            format!(
                "herald tenant create printed no key ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

impl HeraldProcess {
    /// Creates the tenant, then starts `herald api` in `dir`.
    pub async fn spawn(dir: &Path, prefix: &str, env: &[(&str, String)]) -> Result<Self, String> {
        let port = testkit::free_port();
        let listen = format!("127.0.0.1:{port}");
        let tenant = herald_command(&["tenant", "create", TENANT], dir, &listen, prefix, env);
        let api_key = create_tenant(tenant).await?;
        let stderr_path = dir.join("herald.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let child = herald_command(&["api"], dir, &listen, prefix, env)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("running herald api: {e}"))?;
        Ok(HeraldProcess {
            child,
            port,
            base_url: format!("http://{listen}"),
            authorization: format!("Bearer {api_key}"),
            stderr_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let client = http_client();
        let url = format!("{}/health/ready", self.base_url);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "herald exited with {status}: {}",
                    self.stderr_tail()
                ));
            }
            let asking = tokio::time::timeout(Duration::from_secs(1), client.get(&url).send());
            if let Ok(Ok(response)) = asking.await
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "not ready within {READY_TIMEOUT:?}: {}",
            self.stderr_tail()
        ))
    }

    /// The last lines Herald logged.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) -> Option<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Some("herald did not exit within 10 s of SIGTERM and was killed".into())
    }
}
