//! The audit bench: 1,000,000 audit events for one tenant through the audit worker (the
//! embedded broker's queue, the worker pool and the batching audit writer), against plain
//! batched inserts of the same rows into the same table in the same run; then the p99 of
//! each query filter at that size.
//!
//! Run: `cargo bench --bench audit` (SQLite). With `HERALD_BENCH_DATABASE_URL=postgres://...`
//! it runs on that PostgreSQL database instead. `HERALD_BENCH_AUDIT_EVENTS` sets the count.

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use herald::app::Herald;
use herald::broker::Publication;
use herald::config::Settings;
use herald::domain::{Envelope, Event, EventKind, TenantId};
use herald::shutdown::Shutdown;
use herald::store::{AuditQuery, Store};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::measure::percentile_ms;

const EVENT_TYPES: usize = 20;
const USERS: usize = 1000;
const ENTITY_TYPES: usize = 10;
const ENTITIES: usize = 10_000;

/// The i-th synthetic audit event's fields.
fn fields(i: usize) -> (String, String, String, String, chrono::DateTime<Utc>) {
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    (
        format!("EVENT_{}", i % EVENT_TYPES),
        format!("user_{}", (i * 7) % USERS),
        format!("Entity{}", i % ENTITY_TYPES),
        format!("entity_{}", (i * 13) % ENTITIES),
        start + ChronoDuration::seconds((i * 31) as i64),
    )
}

fn event(i: usize, tenant: &str) -> Event {
    let (event_type, user, entity_type, entity, at) = fields(i);
    let payload = json!({
        "tenantId": tenant, "eventType": event_type, "userId": user, "entityType": entity_type,
        "entityId": entity, "changes": {"field": "value", "n": i}, "timestamp": at.to_rfc3339(),
    });
    Event::parse(EventKind::Audit, &payload).expect("a valid audit event")
}

fn settings(dir: &Path) -> Settings {
    use figment::providers::Serialized;
    let database = std::env::var("HERALD_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.join("herald.db").display()));
    let figment = Settings::figment(Path::new("/nonexistent"))
        .merge(Serialized::default("broker.kind", "embedded"))
        .merge(Serialized::default(
            "broker.embedded.path",
            dir.join("broker.db").display().to_string(),
        ))
        .merge(Serialized::default("database.url", database))
        .merge(Serialized::default("queues.audit.max_length", 10_000_000));
    // The audit queue's configured concurrency (its writer's batch size) unless the run
    // names another.
    let figment = match std::env::var("HERALD_BENCH_AUDIT_CONCURRENCY") {
        Ok(n) => figment.merge(Serialized::default(
            "queues.audit.concurrency",
            n.parse::<usize>()
                .expect("HERALD_BENCH_AUDIT_CONCURRENCY is a number"),
        )),
        Err(_) => figment,
    };
    Settings::from_figment(figment).expect("bench settings are valid")
}

/// Publishes `count` audit events to the embedded queue, in batches (not timed).
async fn fill_queue(herald: &Herald, tenant: &str, count: usize) {
    for start in (0..count).step_by(1000) {
        let publications = (start..(start + 1000).min(count))
            .map(|i| Publication::of(&Envelope::new(event(i, tenant)), &herald.topology))
            .collect();
        for result in herald.broker.publish_all(publications).await {
            result.expect("the embedded queue takes the event");
        }
    }
}

/// How many records a tenant's chain holds.
async fn chain_length(store: &dyn Store, tenant: &TenantId) -> i64 {
    let newest = store
        .audit_records(
            tenant,
            &AuditQuery {
                limit: 1,
                ..AuditQuery::default()
            },
        )
        .await
        .expect("the store answers");
    newest.first().map_or(0, |r| r.seq)
}

/// Inserts `count` rows into `audit_records` with plain multi-row INSERTs, 1000 rows a
/// transaction, no chain and no duplicate check: the database's own rate for this table.
macro_rules! plain_inserts {
    ($pool:expr, $db:ty, $tenant:expr, $count:expr) => {{
        let started = Instant::now();
        let recorded_at = Utc::now();
        for start in (0..$count).step_by(1000) {
            let mut tx = $pool.begin().await.expect("a transaction");
            let mut insert = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO audit_records (tenant_id, seq, id, event_type, user_id, entity_type, entity_id, \
                 changes, occurred_at, compliance, recorded_at, prev_hash, hash) ",
            );
            insert.push_values(start..(start + 1000).min($count), |mut row, i| {
                let (event_type, user, entity_type, entity, at) = fields(i);
                row.push_bind($tenant)
                    .push_bind(i as i64 + 1)
                    .push_bind(format!("plain-{i}"))
                    .push_bind(event_type)
                    .push_bind(user)
                    .push_bind(entity_type)
                    .push_bind(entity)
                    .push_bind(format!("{{\"field\":\"value\",\"n\":{i}}}"))
                    .push_bind(at)
                    .push_bind(false)
                    .push_bind(recorded_at)
                    .push_bind(vec![0u8; 32])
                    .push_bind(vec![0u8; 32]);
            });
            insert.build().execute(&mut *tx).await.expect("plain inserts succeed");
            tx.commit().await.expect("a commit");
        }
        started.elapsed()
    }};
}

async fn plain_inserts(url: &str, tenant: &str, count: usize) -> Duration {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.expect("the database");
        plain_inserts!(pool, sqlx::Postgres, tenant, count)
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("the database");
        plain_inserts!(pool, sqlx::Sqlite, tenant, count)
    }
}

/// Makes the i-th query of one filter.
type QueryMaker = Box<dyn Fn(usize) -> AuditQuery>;

async fn query_p99(store: &dyn Store, tenant: &TenantId) {
    println!("  query latency at this size (limit 50, 200 queries each):");
    let filters: Vec<(&str, QueryMaker)> = vec![
        ("none (newest first)", Box::new(|_| AuditQuery::default())),
        (
            "eventType",
            Box::new(|i| AuditQuery {
                event_type: Some(format!("EVENT_{}", i % EVENT_TYPES)),
                ..Default::default()
            }),
        ),
        (
            "userId",
            Box::new(|i| AuditQuery {
                user_id: Some(format!("user_{}", (i * 7) % USERS)),
                ..Default::default()
            }),
        ),
        (
            "entityType + entityId",
            Box::new(|i| {
                let j = i * 977;
                AuditQuery {
                    entity_type: Some(format!("Entity{}", j % ENTITY_TYPES)),
                    entity_id: Some(format!("entity_{}", (j * 13) % ENTITIES)),
                    ..Default::default()
                }
            }),
        ),
        (
            "from + to (one day)",
            Box::new(|i| {
                let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                    + ChronoDuration::days((i % 300) as i64);
                AuditQuery {
                    from: Some(from),
                    to: Some(from + ChronoDuration::days(1)),
                    ..Default::default()
                }
            }),
        ),
        (
            "eventType, second page",
            Box::new(|i| AuditQuery {
                event_type: Some(format!("EVENT_{}", i % EVENT_TYPES)),
                before_seq: Some(900_000),
                ..Default::default()
            }),
        ),
    ];
    for (name, make) in filters {
        let mut times = Vec::with_capacity(200);
        for i in 0..200 {
            let query = AuditQuery {
                limit: 51,
                ..make(i)
            };
            let started = Instant::now();
            store
                .audit_records(tenant, &query)
                .await
                .expect("the query runs");
            times.push(started.elapsed());
        }
        times.sort();
        let (p50, p99) = (percentile_ms(&times, 0.50), percentile_ms(&times, 0.99));
        let verdict = if p99 < 20.0 { "met" } else { "NOT met" };
        println!(
            "    {name:<26} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms   target p99 < 20 ms: {verdict}"
        );
    }
}

fn main() {
    let count: usize = std::env::var("HERALD_BENCH_AUDIT_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let dir = tempfile::TempDir::new().expect("a temporary directory");
        let herald = Herald::start(settings(dir.path()))
            .await
            .expect("Herald starts");
        let store = herald.store.clone();
        println!("herald audit bench: {count} events for one tenant");

        let tenant = TenantId::parse("bench-worker").unwrap();
        // The pool rejects events of a tenant that does not exist.
        herald
            .tenancy
            .create_tenant(&tenant, "bench")
            .await
            .expect("the bench tenant is created");
        print!("  filling the embedded queue... ");
        fill_queue(&herald, "bench-worker", count).await;
        println!("done");
        let shutdown = Shutdown::new();
        let pool = herald.worker_pool(
            EventKind::Audit,
            Arc::new(herald::audit::AuditHandler::start(store.clone())),
        );
        let started = Instant::now();
        let working = tokio::spawn(pool.run(shutdown.clone(), Duration::from_secs(30)));
        while (chain_length(store.as_ref(), &tenant).await as usize) < count {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let worker = started.elapsed();
        shutdown.raise();
        working.await.expect("the pool stops");

        let url = secrecy::ExposeSecret::expose_secret(&herald.settings.database.url).to_owned();
        let plain = plain_inserts(&url, "bench-plain", count).await;
        let worker_rate = count as f64 / worker.as_secs_f64();
        let plain_rate = count as f64 / plain.as_secs_f64();
        let ratio = worker_rate / plain_rate;
        println!(
            "  through the audit worker   {worker_rate:>9.0} events/s  ({:.1} s)",
            worker.as_secs_f64()
        );
        println!(
            "  plain batched inserts      {plain_rate:>9.0} rows/s    ({:.1} s)",
            plain.as_secs_f64()
        );
        println!(
            "  ratio worker/plain         {ratio:>9.2}x   target >= 0.7x: {}",
            if ratio >= 0.7 { "met" } else { "NOT met" }
        );
        let verified = herald::audit::verify(store.as_ref(), &tenant)
            .await
            .expect("verification runs");
        println!(
            "  chain verified             intact {} over {} records",
            verified.intact, verified.records
        );
        query_p99(store.as_ref(), &tenant).await;
    });
}
