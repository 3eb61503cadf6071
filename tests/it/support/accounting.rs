//! Accounting under faults: clients that send emails, each under an idempotency key of its
//! own and repeated until it is accepted, as the seeds' clients do; and a tally of what
//! became of every email accepted: its final state in the ledger, and how many times the
//! SMTP relay received it.

use super::smtp_relay::SmtpRelay;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Each accepted email: its recipient (which names its key) and its id.
    pub accepted: Vec<(String, String)>,
    /// Answers 503 (each with `Retry-After`).
    pub refused: usize,
    /// Answers 409: a repeat while the key's first request was still unanswered.
    pub in_progress: usize,
    /// Requests that found no server (the process was down).
    pub unreachable: usize,
}

/// Clients sending keyed emails until stopped.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<ClientLog>>,
}

impl Clients {
    /// Starts `count` clients sending to Herald at `address` (`http://host:port`) with
    /// `api_key`.
    pub fn start(count: usize, address: &str, api_key: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        herald::channels::tls::install_default_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let tasks = (0..count)
            .map(|n| {
                let (stop, client) = (stop.clone(), client.clone());
                let (address, api_key) = (address.to_owned(), api_key.to_owned());
                tokio::spawn(async move {
                    let mut log = ClientLog::default();
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("client{n}-{sent}");
                        let to = format!("{key}@example.com");
                        let body =
                            json!({"to": [to], "template": "welcome", "data": {"name": "Ada"}});
                        // The same key until it is accepted, whatever the answers before.
                        loop {
                            let response = client
                                .post(format!("{address}/v1/notifications/email"))
                                .bearer_auth(&api_key)
                                .header("idempotency-key", &key)
                                .json(&body)
                                .send()
                                .await;
                            match response.map(|r| (r.status().as_u16(), r)) {
                                Ok((202, r)) => {
                                    let answer: Value = r.json().await.unwrap();
                                    let id = answer["id"].as_str().unwrap().to_owned();
                                    log.accepted.push((to.clone(), id));
                                    break;
                                }
                                Ok((503, r)) => {
                                    assert!(r.headers().contains_key("retry-after"));
                                    log.refused += 1;
                                }
                                Ok((409, _)) => log.in_progress += 1,
                                Ok((other, r)) => {
                                    panic!("{key} answered {other}: {}", r.text().await.unwrap())
                                }
                                Err(_) => log.unreachable += 1,
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        sent += 1;
                    }
                    log
                })
            })
            .collect();
        Clients { stop, tasks }
    }

    /// Stops the clients once each has its current email accepted; answers what they saw.
    pub async fn stop(self) -> ClientLog {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = ClientLog::default();
        for task in self.tasks {
            let log = tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("every client's last email is accepted")
                .unwrap();
            all.accepted.extend(log.accepted);
            all.refused += log.refused;
            all.in_progress += log.in_progress;
            all.unreachable += log.unreachable;
        }
        all
    }
}

/// What became of the accepted emails.
#[derive(Debug)]
pub struct Tally {
    /// Emails accepted (202).
    pub accepted: usize,
    /// By final status in the ledger (`delivered`, `failed`, ...), and `not final` for
    /// those still `queued` when the tally gave up.
    pub statuses: HashMap<String, usize>,
    /// Accepted emails the relay never received.
    pub lost: Vec<String>,
    /// Messages the relay received beyond one per accepted email.
    pub duplicates: usize,
}

impl Tally {
    /// The tally and what the clients saw, in a sentence, under `fault`.
    pub fn report(&self, fault: &str, log: &ClientLog) -> String {
        format!(
            "{fault}: {} emails accepted ({} answers 503, {} 409, {} requests unanswered); \
             ledger {:?}; {} lost; {} duplicates",
            self.accepted,
            log.refused,
            log.in_progress,
            log.unreachable,
            self.statuses,
            self.lost.len(),
            self.duplicates
        )
    }

    /// Asserts the promise: every accepted email received and `delivered` in the ledger,
    /// with at most `in_flight` duplicates (what the faults could have caught in flight).
    pub fn assert_accounted(&self, in_flight: usize) {
        assert!(
            self.lost.is_empty(),
            "accepted but never received: {:?}",
            self.lost
        );
        assert_eq!(
            self.statuses.get("delivered"),
            Some(&self.accepted),
            "every accepted email is delivered in the ledger: {:?}",
            self.statuses
        );
        assert!(
            self.duplicates <= in_flight,
            "{} duplicates, more than the {in_flight} that could have been in flight",
            self.duplicates
        );
    }
}

/// Waits (up to `within`) until the relay has every accepted email and the ledger gives
/// each a final state, then tallies them.
pub async fn tally(
    relay: &SmtpRelay,
    log: &ClientLog,
    address: &str,
    api_key: &str,
    within: Duration,
) -> Tally {
    let deadline = tokio::time::Instant::now() + within;
    let received = loop {
        let received = relay.received();
        let got: std::collections::HashSet<&str> = received
            .iter()
            .filter_map(|m| m["rcptTos"][0].as_str())
            .collect();
        let all = log.accepted.iter().all(|(to, _)| got.contains(to.as_str()));
        if all || tokio::time::Instant::now() >= deadline {
            break received;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for message in &received {
        if let Some(to) = message["rcptTos"][0].as_str() {
            *per_recipient.entry(to.to_owned()).or_default() += 1;
        }
    }
    let client = super::http_client();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for (_, id) in &log.accepted {
        let status = loop {
            let answer: Value = client
                .get(format!("{address}/v1/notifications/{id}"))
                .bearer_auth(api_key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            let status = answer["status"].as_str().unwrap_or("missing").to_owned();
            let settled = !matches!(status.as_str(), "queued" | "processing" | "missing");
            if settled || tokio::time::Instant::now() >= deadline {
                break if settled {
                    status
                } else {
                    format!("not final ({status})")
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        *statuses.entry(status).or_default() += 1;
    }
    Tally {
        accepted: log.accepted.len(),
        statuses,
        lost: log
            .accepted
            .iter()
            .filter(|(to, _)| !per_recipient.contains_key(to))
            .map(|(to, _)| to.clone())
            .collect(),
        duplicates: per_recipient.values().map(|n| n.saturating_sub(1)).sum(),
    }
}
