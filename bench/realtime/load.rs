//! The messages of a run: chat messages POSTed at a steady rate, each to one connected
//! user, and the time from each POST's 202 to its recipient's socket having it.

use crate::Shape;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the sender wakes to send what has fallen due since.
const TICK: Duration = Duration::from_millis(10);

/// A POST not answered within this is counted as not accepted.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long messages may still arrive after the last POST is answered.
const STRAGGLERS: Duration = Duration::from_secs(30);

/// The `i`th connected user.
pub fn user(i: usize) -> String {
    format!("u{i}")
}

/// When each chat message reached its recipient's socket, by its `messageId`.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<HashMap<String, Instant>>>);

impl Arrivals {
    /// Notes that message `id` arrived now.
    pub fn arrived(&self, id: String) {
        self.0.lock().unwrap().insert(id, Instant::now());
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// What became of a run's messages.
pub struct Delivery {
    /// Messages Herald accepted (202).
    pub sent: usize,
    /// Messages answered otherwise, or not within [`REQUEST_TIMEOUT`].
    pub refused: usize,
    /// For each accepted message that reached its recipient, the time from its 202 to its
    /// arrival, sorted (0 when the socket was first).
    pub latencies: Vec<Duration>,
}

/// The `i`th message, `id`: to one user, spread over all of them.
fn message(id: &str, i: usize, connections: usize) -> Value {
    json!({
        "messageId": id, "conversationId": format!("c{}", i % 500),
        "senderId": "bench", "recipientIds": [user((i * 7919) % connections)],
        "content": "hello", "messageType": "text", "timestamp": "2026-11-23T10:00:00Z",
    })
}

/// POSTs `shape.rate` messages a second for `shape.seconds`, each as soon as it is due
/// (whatever the answers to the earlier ones), then waits for them to arrive.
pub async fn send(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    shape: &Shape,
    arrivals: &Arrivals,
) -> Delivery {
    let total = shape.rate * shape.seconds;
    let mut posts = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(TICK);
    let started = Instant::now();
    while posts.len() < total {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * shape.rate as f64) as usize + 1;
        for i in posts.len()..due.min(total) {
            let id = format!("m{i}");
            let post = client
                .post(format!("{base}/v1/chat/messages"))
                .bearer_auth(key)
                .timeout(REQUEST_TIMEOUT)
                .json(&message(&id, i, shape.connections));
            posts.push(tokio::spawn(async move {
                let answer = post.send().await;
                let accepted = answer.is_ok_and(|a| a.status() == 202);
                accepted.then(|| (id, Instant::now()))
            }));
        }
    }
    let mut sent = HashMap::with_capacity(total);
    for post in posts {
        sent.extend(post.await.unwrap());
    }
    let waiting = Instant::now();
    while arrivals.count() < sent.len() && waiting.elapsed() < STRAGGLERS {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrived = arrivals.0.lock().unwrap();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, at)| Some(arrived.get(id)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    Delivery {
        sent: sent.len(),
        refused: total - sent.len(),
        latencies,
    }
}
