//! Faults of Herald's own process, in the accounting style: emails accepted while the
//! process is killed (SIGKILL, no chance to settle anything) and started again, each one
//! afterwards delivered or in a final failed state, with duplicates counted and bounded by
//! what was in flight. The broker's faults are in `rabbitmq_node.rs`.

use crate::support;
use crate::support::accounting::{Clients, tally};
use crate::support::smtp_relay::SmtpRelay;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ADMIN_TOKEN: &str = "an-admin-token-for-fault-tests";

/// Starts the `herald` binary in `dir` (embedded broker and SQLite under it), listening on
/// `port` and sending email through `relay`; its log goes to `dir/herald-<n>.log`.
fn start_herald(dir: &Path, port: u16, relay: &SmtpRelay, n: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("herald-{n}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .current_dir(dir)
        .env("HERALD__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("HERALD__ADMIN__TOKEN", ADMIN_TOKEN)
        .env("HERALD__EMAIL__SMTP__HOST", "127.0.0.1")
        .env("HERALD__EMAIL__SMTP__PORT", relay.port.to_string())
        .env("HERALD__EMAIL__SMTP__SECURITY", "plain")
        // A send answers 503 after a second without a confirmation; a claim left by the
        // killed process is resumed three seconds after it was made.
        .env("HERALD__BROKER__PUBLISH_TIMEOUT", "1s")
        .env("RUST_LOG", "warn")
        .env_remove("RABBITMQ_URL")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the herald binary starts")
}

/// Waits until Herald answers on `address`.
async fn answering(address: &str) {
    let client = support::http_client();
    let up = support::eventually(Duration::from_secs(30), || {
        let request = client.get(format!("{address}/health")).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    assert!(up, "Herald answers at {address}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_accepted_while_the_process_is_killed_are_each_delivered_and_duplicates_are_bounded()
{
    const KILLS: usize = 4;
    let Some(relay) = SmtpRelay::start() else {
        return;
    };
    let dir = tempfile::TempDir::new().unwrap();
    let port = testkit::free_port();
    let address = format!("http://127.0.0.1:{port}");
    let mut herald = start_herald(dir.path(), port, &relay, 0);
    answering(&address).await;
    let created: serde_json::Value = support::http_client()
        .post(format!("{address}/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = created["apiKey"]["key"]
        .as_str()
        .expect("the tenant's key")
        .to_owned();

    let clients = Clients::start(8, &address, &api_key);
    for n in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        herald.kill().unwrap(); // SIGKILL
        herald.wait().unwrap();
        herald = start_herald(dir.path(), port, &relay, n);
        answering(&address).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = clients.stop().await;
    let tally = tally(&relay, &log, &address, &api_key, Duration::from_secs(90)).await;
    herald.kill().unwrap();
    herald.wait().unwrap();

    eprintln!("{}", tally.report(&format!("{KILLS} SIGKILLs"), &log));
    assert!(
        tally.accepted > 0 && log.unreachable > 0,
        "the faults hit sends"
    );
    // A duplicate is an email the relay took whose outcome the killed process had not yet
    // recorded: at most the emails in flight at each kill (the queue's concurrency).
    tally.assert_accounted(128 * KILLS);
}
