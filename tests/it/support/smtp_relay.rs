//! A real SMTP relay for tests: `tests/it/support/smtp_relay.py` on aiosmtpd (Debian's
//! `python3-aiosmtpd`), started per test. Its answers depend on the recipient: `reject-*`
//! gets 550, `busy-*` gets 451 once. It records each accepted message as Python's email
//! parser reads it.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A running relay; stopped when dropped.
pub struct SmtpRelay {
    /// The port it listens on, at 127.0.0.1.
    pub port: u16,
    /// The port as settings take it.
    port_text: String,
    child: Child,
    dir: TempDir,
}

/// The Python that has aiosmtpd: Debian's, else whichever `python3` is first on the path.
fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl SmtpRelay {
    /// Starts a plain relay; `None` (with a message) when aiosmtpd is missing outside CI.
    /// In CI its absence is a failure.
    pub fn start() -> Option<SmtpRelay> {
        Self::start_with(&[])
    }

    /// Starts a relay with the script's extra `args` (`--cert`, `--implicit-tls`, `--auth`).
    pub fn start_with(args: &[&str]) -> Option<SmtpRelay> {
        let Some(python) = python() else {
            super::tool_missing("aiosmtpd is not installed (apt-get install python3-aiosmtpd)");
            return None;
        };
        let dir = TempDir::new().expect("a temporary directory");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/smtp_relay.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the relay starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the relay says where it listens");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the relay did not start: {line:?}"));
        Some(SmtpRelay {
            port,
            port_text: port.to_string(),
            child,
            dir,
        })
    }

    /// Settings overrides that make Herald send through this relay.
    pub fn overrides(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("email.smtp.host", "127.0.0.1"),
            ("email.smtp.port", &self.port_text),
            ("email.smtp.security", "plain"),
        ]
    }

    /// Every message accepted so far.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("the relay writes JSON lines"))
            .collect()
    }

    /// The messages accepted, once there are `count` (or after 20 s).
    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
