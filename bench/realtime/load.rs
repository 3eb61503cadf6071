//! The messages of a run: chat messages POSTed at a steady rate, each to one connected
//! user, and the time from each POST's 202 to its recipient's socket having it.

use crate::Shape;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
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

    /// For each message of `accepted` (its id and when it was accepted) that has arrived,
    /// the time from its acceptance to its arrival (0 when the socket was first).
    fn since(&self, accepted: &HashMap<String, Instant>) -> Vec<Duration> {
        let arrived = self.0.lock().unwrap();
        accepted
            .iter()
            .filter_map(|(id, at)| Some(arrived.get(id)?.saturating_duration_since(*at)))
            .collect()
    }
}

/// What became of a run's messages.
pub struct Delivery {
    /// For each message Herald accepted (202), the time from its POST to its answer,
    /// sorted.
    pub answers: Vec<Duration>,
    /// Messages answered otherwise, or not within [`REQUEST_TIMEOUT`], by why: the status,
    /// `timeout`, `connect` (no connection) or `error`.
    pub refused: BTreeMap<String, usize>,
    /// For each accepted message that reached its recipient, the time from its 202 to its
    /// arrival, sorted.
    pub latencies: Vec<Duration>,
    /// From the first POST until the last was answered or given up.
    pub posting: Duration,
    /// From then until every accepted message had arrived, or [`STRAGGLERS`].
    pub straggling: Duration,
}

/// A message Herald accepted.
struct Accepted {
    id: String,
    /// When its 202 came.
    at: Instant,
    /// How long after its POST.
    after: Duration,
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
/// (whatever the answers to the earlier ones), then waits for the accepted ones to arrive.
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
                let posted = Instant::now();
                match post.send().await {
                    Ok(answer) if answer.status() == 202 => Ok(Accepted {
                        id,
                        at: Instant::now(),
                        after: posted.elapsed(),
                    }),
                    Ok(answer) => Err(answer.status().as_u16().to_string()),
                    Err(e) if e.is_timeout() => Err("timeout".to_owned()),
                    Err(e) if e.is_connect() => Err("connect".to_owned()),
                    Err(_) => Err("error".to_owned()),
                }
            }));
        }
    }
    let (mut accepted, mut answers, mut refused) =
        (HashMap::with_capacity(total), Vec::new(), BTreeMap::new());
    for post in posts {
        match post.await.unwrap() {
            Ok(Accepted { id, at, after }) => {
                accepted.insert(id, at);
                answers.push(after);
            }
            Err(why) => *refused.entry(why).or_default() += 1,
        }
    }
    let posting = started.elapsed();
    let waiting = Instant::now();
    while arrivals.since(&accepted).len() < accepted.len() && waiting.elapsed() < STRAGGLERS {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let straggling = waiting.elapsed();
    let mut latencies = arrivals.since(&accepted);
    latencies.sort();
    answers.sort();
    Delivery {
        answers,
        refused,
        posting,
        straggling,
        latencies,
    }
}
