//! The seeds' own client code (tests/seeds: amqplib, and the real-time clients,
//! socket.io-client and an EventSource, in Node and in Debian's Chromium), and RabbitMQ
//! virtual hosts of the tests' own, so that a test can use the seeds' queue names as they
//! are without meeting another test's.

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// RabbitMQ's management API the tests use.
fn management_url() -> String {
    std::env::var("HERALD_TEST_RABBITMQ_MANAGEMENT")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned())
}

/// The directory of the seeds' client code, once `npm ci` has installed it; `None` (with
/// a message) outside CI when it has not, a failure in CI.
pub fn seed_clients() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/seeds");
    // Every package the seeds pin, so that a copy installed before one was added counts
    // as not installed rather than failing in Node.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("package.json")).expect("tests/seeds/package.json"),
    )
    .expect("package.json is JSON");
    let installed = manifest["dependencies"]
        .as_object()
        .expect("package.json lists dependencies")
        .keys()
        .all(|package| dir.join("node_modules").join(package).exists());
    if installed {
        return Some(dir);
    }
    super::tool_missing(&format!(
        "the seeds' clients are not installed: run `npm ci --prefix {}` (.ci/run does)",
        dir.display()
    ));
    None
}

/// Runs seed 001's message-queue service (tests/seeds/seed001.mjs) against `url` with
/// `steps`; answers each step's result line.
pub fn seed001(dir: &std::path::Path, url: &str, steps: &Value) -> Vec<Value> {
    run_seed(dir, "seed001.mjs", url, steps)
}

/// Runs seed 004's update worker (tests/seeds/seed004.mjs) against `url` with `steps`;
/// answers each step's result line.
pub fn seed004(dir: &std::path::Path, url: &str, steps: &Value) -> Vec<Value> {
    run_seed(dir, "seed004.mjs", url, steps)
}

/// Runs one of the seeds' scripts, which print a JSON line per step.
fn run_seed(dir: &std::path::Path, script: &str, url: &str, steps: &Value) -> Vec<Value> {
    let output = std::process::Command::new("node")
        .arg(dir.join(script))
        .arg(url)
        .arg(steps.to_string())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.trim().is_empty(),
        "{script} printed nothing: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a result line is JSON"))
        .collect()
}

/// Runs a scenario of the seeds' real-time clients (tests/seeds/realtime.mjs:
/// socket.io-client, eventsource) with `config`; answers the line it prints.
pub async fn realtime_client(dir: &std::path::Path, scenario: &str, config: &Value) -> Value {
    let mut command = std::process::Command::new("node");
    command
        .arg(dir.join("realtime.mjs"))
        .arg(scenario)
        .arg(config.to_string());
    // Node runs while the test's Herald serves it on this runtime.
    let output = tokio::task::spawn_blocking(move || command.output().expect("node runs"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    seen(&format!("realtime.mjs {scenario}"), &stdout, &output.stderr)
}

/// What a real-time script saw: the last line it printed, as JSON; fails the test with
/// the script's error, or with its stderr when it printed nothing.
fn seen(script: &str, stdout: &str, stderr: &[u8]) -> Value {
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "{script} printed nothing: {}",
            String::from_utf8_lossy(stderr)
        )
    });
    let seen: Value = serde_json::from_str(line).expect("its line is JSON");
    assert!(seen.get("error").is_none(), "{script}: {seen}");
    seen
}

/// Debian's Chromium, which the browser test drives.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser scenario (tests/seeds/browser.mjs), started: it serves its page, has said
/// from which origins, and waits for a Herald to run against.
pub struct BrowserPage {
    /// The page's origin, which Herald is to allow.
    pub origin: String,
    /// Another origin of the same page, which Herald is not to allow.
    pub refused_origin: String,
    node: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl BrowserPage {
    /// Starts the scenario; `None` (with a message) outside CI when Chromium or the seeds'
    /// packages are missing, a failure in CI.
    pub async fn serve() -> Option<BrowserPage> {
        let dir = seed_clients()?;
        if !std::path::Path::new(CHROMIUM).exists() {
            super::tool_missing(&format!(
                "Debian's Chromium is not at {CHROMIUM}: `apt-get install chromium` (.ci/run does)"
            ));
            return None;
        }
        let started = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut node = std::process::Command::new("node")
                .arg(dir.join("browser.mjs"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("node runs");
            let mut stdout = std::io::BufReader::new(node.stdout.take().unwrap());
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .expect("browser.mjs's first line");
            if line.is_empty() {
                let output = node.wait_with_output().expect("node runs");
                panic!(
                    "browser.mjs printed nothing: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            (node, stdout, line)
        });
        let (node, stdout, line) = started.await.unwrap();
        let origins: Value = serde_json::from_str(&line).expect("its first line is JSON");
        Some(BrowserPage {
            origin: origins["origin"].as_str().unwrap().to_owned(),
            refused_origin: origins["refusedOrigin"].as_str().unwrap().to_owned(),
            node,
            stdout,
        })
    }

    /// Runs the scenario against the Herald `config` names (`{base, key, token, user}`);
    /// answers what the page saw.
    pub async fn run(mut self, mut config: Value) -> Value {
        use std::io::{Read, Write};
        config["chromium"] = CHROMIUM.into();
        let mut stdin = self.node.stdin.take().unwrap();
        writeln!(stdin, "{config}").expect("browser.mjs reads its configuration");
        drop(stdin);
        let output = tokio::task::spawn_blocking(move || {
            // Its stderr is read to the end as it exits; what it printed since waits here.
            let output = self.node.wait_with_output().expect("node runs");
            let mut stdout = String::new();
            self.stdout.read_to_string(&mut stdout).unwrap();
            (stdout, output.stderr)
        });
        let (stdout, stderr) = output.await.unwrap();
        seen("browser.mjs", &stdout, &stderr)
    }
}

/// What the management API answers to `GET /api/{path}`, as JSON.
pub async fn management(path: &str) -> Value {
    super::http_client()
        .get(format!("{}/api/{path}", management_url()))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A RabbitMQ virtual host of one test's own, made through the management API.
pub struct Vhost {
    /// Its name.
    pub name: String,
    client: reqwest::Client,
}

impl Vhost {
    /// Makes a fresh virtual host that guest may use; fails the test, saying why, when
    /// the management API does not answer.
    pub async fn new() -> Vhost {
        let name = format!("herald-test-{}", uuid::Uuid::now_v7().simple());
        let client = super::http_client();
        let put = |path: String, body: Value| {
            client
                .put(format!("{}/api/{path}", management_url()))
                .basic_auth("guest", Some("guest"))
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
        };
        let made = put(format!("vhosts/{name}"), serde_json::json!({})).await;
        let made = made.unwrap_or_else(|e| {
            panic!(
                "this test needs RabbitMQ's management API at {} ({e}): enable it with \
                 `rabbitmq-plugins enable rabbitmq_management` (.ci/run does), or point \
                 HERALD_TEST_RABBITMQ_MANAGEMENT at one",
                management_url()
            )
        });
        assert!(
            made.status().is_success(),
            "making vhost {name}: {}",
            made.status()
        );
        let permitted = put(
            format!("permissions/{name}/guest"),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await
        .unwrap();
        assert!(permitted.status().is_success());
        Vhost { name, client }
    }

    /// The AMQP URL of the virtual host.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// The management API's view of the queue `name`.
    pub async fn queue(&self, name: &str) -> Value {
        management(&format!("queues/{}/{name}", self.name)).await
    }

    /// The management API's view of the queue `name` once `holds` holds for it (or after
    /// 20 s): its statistics, policy included, are collected every few seconds.
    pub async fn queue_when(&self, name: &str, holds: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let queue = self.queue(name).await;
            if holds(&queue) || tokio::time::Instant::now() >= deadline {
                return queue;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Deletes the virtual host with everything in it.
    pub async fn delete(self) {
        let _ = self
            .client
            .delete(format!("{}/api/vhosts/{}", management_url(), self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    }
}
