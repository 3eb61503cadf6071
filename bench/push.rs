//! The push bench: pushes per second that Herald's push worker delivers to a local APNs
//! stand-in (HTTP/2 over TLS, checking every provider token, as in the tests), the
//! POST-to-provider latency at a steady rate, and peak RSS.
//!
//! Run: `cargo bench --bench push`. `HERALD_BENCH_PUSHES` sets the pushes of the
//! throughput phase (default 20,000).
//!
//! 1. Throughput: 1,000 users with 5 iOS devices each; notifications to all 1,000 are
//!    queued first (not timed), then the push worker drains them; the rate counts device
//!    pushes the stand-in answered 200, from the worker's start to the last one.
//! 2. Latency: notifications of 10 recipients POSTed over HTTP at 100 a second (1,000
//!    pushes a second) for 10 s; for each device, the time from the POST's 202 to the
//!    stand-in receiving its push.
//!
//! The stand-in runs in this process, so the peak RSS printed is Herald's and the
//! stand-in's together (the stand-in keeps only each request's token, time and status).

use herald::app::{Herald, Roles};
use herald::broker::Publication;
use herald::config::Settings;
use herald::domain::{Envelope, Event, EventKind, TenantId};
use herald::shutdown::Shutdown;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::measure::{peak_rss_mb, percentile_ms};
use testkit::push_providers::ApnsStandIn;

const USERS: usize = 1000;
const DEVICES_PER_USER: usize = 5;

fn settings(dir: &Path, apns: &ApnsStandIn) -> Settings {
    use figment::providers::Serialized;
    let figment = Settings::figment(Path::new("/nonexistent"))
        .merge(Serialized::default("broker.kind", "embedded"))
        .merge(Serialized::default(
            "broker.embedded.path",
            dir.join("broker.db").display().to_string(),
        ))
        .merge(Serialized::default(
            "database.url",
            format!("sqlite://{}", dir.join("herald.db").display()),
        ))
        .merge(Serialized::default("http.listen", "127.0.0.1:0"))
        .merge(Serialized::default("rate_limits.per_second", 1_000_000))
        .merge(Serialized::default("rate_limits.burst", 1_000_000))
        .merge(Serialized::default("push.apns.url", apns.url.clone()))
        .merge(Serialized::default(
            "push.apns.sandbox_url",
            apns.url.clone(),
        ))
        .merge(Serialized::default(
            "push.tls_ca_file",
            apns.ca_file.clone(),
        ))
        .merge(Serialized::default("queues.push.max_length", 10_000_000));
    Settings::from_figment(figment).expect("bench settings are valid")
}

async fn run() {
    let pushes = testkit::env_or("HERALD_BENCH_PUSHES", 20_000);
    let apns = ApnsStandIn::start_keeping(false).await;
    let dir = tempfile::TempDir::new().unwrap();
    let herald = Herald::start(settings(dir.path(), &apns))
        .await
        .expect("Herald starts");
    let store = herald.store.clone();
    let tenant = TenantId::parse("bench").unwrap();
    let (_, key) = herald
        .tenancy
        .create_tenant(&tenant, "bench")
        .await
        .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key.key).to_owned();
    let (p8, point) = testkit::keys::p256_key(dir.path());
    apns.accept_key("BENCHKEY01", point, "BENCHTEAM1");
    let credentials = json!({"keyId": "BENCHKEY01", "teamId": "BENCHTEAM1", "topic": "com.example.bench", "privateKey": p8, "environment": "sandbox"});
    store
        .put_provider(&tenant, "apns", &credentials.to_string())
        .await
        .unwrap();
    for user in 0..USERS {
        for device in 0..DEVICES_PER_USER {
            store
                .register_device(
                    &tenant,
                    &format!("u{user}"),
                    "ios",
                    &format!("tok-{user}-{device}"),
                )
                .await
                .unwrap();
        }
    }

    // Throughput: queued first, then drained.
    let notifications = pushes.div_ceil(USERS * DEVICES_PER_USER);
    let everyone: Vec<String> = (0..USERS).map(|u| format!("u{u}")).collect();
    let publications = (0..notifications)
        .map(|_| {
            let payload = json!({"tenantId": "bench", "recipientIds": everyone, "title": "Sale", "body": "Today only"});
            let envelope = Envelope::new(Event::parse(EventKind::Push, &payload).unwrap());
            Publication::of(&envelope, &herald.topology)
        })
        .collect();
    for result in herald.broker.publish_all(publications).await {
        result.unwrap();
    }
    let expected = notifications * USERS * DEVICES_PER_USER;
    let shutdown = Shutdown::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let started = Instant::now();
    let running = tokio::spawn(herald.clone().run(
        Roles {
            api: true,
            queues: vec![EventKind::Push],
        },
        Some(listener),
        shutdown.clone(),
    ));
    while apns.accepted() < expected {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the pushes did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let rate = expected as f64 / elapsed.as_secs_f64();
    println!(
        "push bench: {expected} pushes to {} iOS devices through the APNs stand-in (HTTP/2, TLS)",
        USERS * DEVICES_PER_USER
    );
    println!(
        "  throughput           {rate:>9.0} pushes/s   ({} notifications of 1,000 recipients, queued first)",
        notifications
    );
    println!("  APNs connections     {:>9}", apns.connections());

    // Latency at a steady rate: 100 notifications of 10 recipients a second, for 10 s.
    herald::channels::tls::install_default_provider();
    let client = reqwest::Client::new();
    let before = apns.accepted();
    let mut accepted_at: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..1000usize {
        tick.tick().await;
        let recipients: Vec<String> = (0..10)
            .map(|r| format!("u{}", (n * 10 + r) % USERS))
            .collect();
        let response = client
            .post(format!("{address}/v1/notifications/push"))
            .bearer_auth(&key)
            .json(&json!({"recipientIds": recipients, "title": "Hi", "body": "There"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let at = Instant::now();
        for user in &recipients {
            for device in 0..DEVICES_PER_USER {
                accepted_at.insert(format!("tok-{}-{device}-{n}", &user[1..]), at);
            }
        }
    }
    let wanted = before + 1000 * 10 * DEVICES_PER_USER;
    let waiting = Instant::now();
    while apns.accepted() < wanted && waiting.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each notification's pushes are matched to its POST by order: the n-th POST's
    // devices are those received in the n-th group of 50.
    let received = apns.received();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in &received[before..] {
        let round = seen.entry(request.token.clone()).or_default();
        // The k-th time a token is pushed to in this phase belongs to the k-th POST that
        // named its user; users are named by POSTs n with n*10..n*10+9 covering them.
        let user: usize = request.token[4..]
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let first_post = user / 10;
        let n = first_post + *round * (USERS / 10);
        *round += 1;
        let device = request.token.rsplit('-').next().unwrap();
        if let Some(at) = accepted_at.get(&format!("tok-{user}-{device}-{n}")) {
            latencies.push(request.at.saturating_duration_since(*at));
        }
    }
    latencies.sort();
    println!(
        "  latency at 1,000 pushes/s, POST 202 to APNs receipt: p50 {:.1} ms, p99 {:.1} ms ({} pushes)",
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        latencies.len()
    );
    if let Some(rss) = peak_rss_mb("self") {
        println!("  peak RSS             {rss:>9.1} MB (Herald and the stand-in, one process)");
    }
    shutdown.raise();
    running.await.unwrap().unwrap();
}

fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}
