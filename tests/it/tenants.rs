//! Tenancy: API keys decide the tenant, the admin API manages tenants and keys, and a
//! revoked key is refused within a second, also by a second instance on the same database.

use crate::support::{self, TestApp};
use herald::app::{Herald, Roles};
use herald::config::BrokerKind;
use herald::domain::TenantId;
use herald::shutdown::Shutdown;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::seeds::email_event;

const ADMIN_TOKEN: &str = "an-admin-token-for-tests";

#[tokio::test]
async fn sends_need_a_valid_key_and_the_key_decides_the_tenant() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let url = format!("{}/v1/notifications/email", app.address);
    let without_key = app
        .client
        .post(&url)
        .json(&email_event())
        .send()
        .await
        .unwrap();
    assert_eq!(without_key.status(), StatusCode::UNAUTHORIZED);
    let body: Value = without_key.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let forged = app
        .client
        .post(&url)
        .bearer_auth(format!("hk_000000000000_{}", "0".repeat(48)))
        .json(&email_event())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let mut other_tenant = email_event();
    other_tenant["tenantId"] = json!(2);
    let response = app
        .post_json("/v1/notifications/email", &other_tenant)
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let mut in_batch = other_tenant.clone();
    in_batch["kind"] = json!("email");
    let response = app
        .post_json("/v1/batch", &json!({"events": [in_batch]}))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let mut no_tenant = email_event();
    no_tenant.as_object_mut().unwrap().remove("tenantId");
    let response = app.post_json("/v1/notifications/email", &no_tenant).await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "the key's tenant is filled in"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let response = app
        .client
        .post(format!("{}/admin/tenants", app.address))
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

/// A client of one Herald's admin API.
struct Admin<'a> {
    client: &'a reqwest::Client,
    address: &'a str,
}

impl Admin<'_> {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

async fn send_with(client: &reqwest::Client, address: &str, key: &str) -> StatusCode {
    let mut event = email_event();
    event.as_object_mut().unwrap().remove("tenantId");
    client
        .post(format!("{address}/v1/notifications/email"))
        .bearer_auth(key)
        .json(&event)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_admin_api_creates_tenants_and_manages_their_keys() {
    let overrides = [("admin.token", ADMIN_TOKEN)];
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &overrides).await;
    let admin = Admin {
        client: &app.client,
        address: &app.address,
    };
    let wrong = app
        .client
        .post(format!("{}/admin/tenants", app.address))
        .bearer_auth("not-the-admin-token-at-all")
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let created = admin.post("/admin/tenants", json!({"name": "acme"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["tenant"]["id"], "acme");
    let key = created["apiKey"]["key"].as_str().unwrap().to_owned();
    assert_eq!(
        send_with(&app.client, &app.address, &key).await,
        StatusCode::ACCEPTED
    );
    let again = admin.post("/admin/tenants", json!({"name": "acme"})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let bad = admin
        .post("/admin/tenants", json!({"name": "Acme Corp!"}))
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let second: Value = admin
        .post("/admin/tenants/acme/keys", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let second_key = second["key"].as_str().unwrap().to_owned();
    let listed: Value = app
        .client
        .get(format!("{}/admin/tenants/acme/keys", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let listing = listed.to_string();
    assert!(
        !listing.contains(&key) && !listing.contains(&second_key),
        "keys are listed by id only"
    );

    let revoked = app
        .client
        .delete(format!(
            "{}/admin/tenants/acme/keys/{}",
            app.address,
            created["apiKey"]["id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert!(
        support::eventually(Duration::from_secs(1), || async {
            send_with(&app.client, &app.address, &key).await == StatusCode::UNAUTHORIZED
        })
        .await,
        "the revoked key is refused within a second"
    );
    assert_eq!(
        send_with(&app.client, &app.address, &second_key).await,
        StatusCode::ACCEPTED
    );
    app.stop().await;
}

/// Starts a Herald API on `database_url` and answers its address.
async fn instance(
    database_url: &str,
    dir: &std::path::Path,
    shutdown: &Shutdown,
) -> (Herald, String) {
    let overrides = [("database.url", database_url), ("admin.token", ADMIN_TOKEN)];
    let settings = support::settings(BrokerKind::Embedded, dir, "", &overrides);
    let herald = Herald::start(settings).await.unwrap();
    let (address, _) = support::serve(&herald, Roles::api_only(), shutdown).await;
    (herald, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL on 127.0.0.1:5432 (HERALD_TEST_POSTGRES_URL); cargo nextest run --run-ignored all runs it"]
async fn a_revoked_key_is_refused_within_a_second_by_every_instance_on_one_postgres() {
    let database = support::fresh_postgres_database().await;
    let shutdown = Shutdown::new();
    let (dir_a, dir_b) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let (herald_a, a) = instance(&database, dir_a.path(), &shutdown).await;
    let (_herald_b, b) = instance(&database, dir_b.path(), &shutdown).await;
    let client = support::http_client();
    let admin = Admin {
        client: &client,
        address: &a,
    };
    let created: Value = admin
        .post("/admin/tenants", json!({"name": "globex"}))
        .await
        .json()
        .await
        .unwrap();
    let key = created["apiKey"]["key"].as_str().unwrap().to_owned();
    // Both instances have checked (and cached) the key.
    assert_eq!(send_with(&client, &a, &key).await, StatusCode::ACCEPTED);
    assert_eq!(send_with(&client, &b, &key).await, StatusCode::ACCEPTED);

    let tenant = TenantId::parse("globex").unwrap();
    let key_id = created["apiKey"]["id"].as_str().unwrap();
    assert!(
        herald_a
            .tenancy
            .store()
            .revoke_api_key(&tenant, key_id)
            .await
            .unwrap()
    );
    let revoked_at = Instant::now();
    for address in [&a, &b] {
        let refused = support::eventually(Duration::from_secs(1), || async {
            send_with(&client, address, &key).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused, "{address} refused the revoked key within a second");
    }
    assert!(revoked_at.elapsed() < Duration::from_millis(1500));
    shutdown.raise();
}

#[tokio::test]
async fn a_tenant_over_its_limit_gets_429_while_another_is_unaffected() {
    let overrides = [("rate_limits.per_second", "5"), ("rate_limits.burst", "5")];
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &overrides).await;
    let other = TenantId::parse("2").unwrap();
    let (_, other_key) = app
        .herald
        .tenancy
        .create_tenant(&other, "other")
        .await
        .unwrap();
    let other_key = secrecy::ExposeSecret::expose_secret(&other_key.key).to_owned();

    for _ in 0..5 {
        assert_eq!(
            send_with(&app.client, &app.address, &app.key).await,
            StatusCode::ACCEPTED
        );
    }
    let mut event = email_event();
    event.as_object_mut().unwrap().remove("tenantId");
    let limited = app
        .client
        .post(format!("{}/v1/notifications/email", app.address))
        .bearer_auth(&app.key)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        send_with(&app.client, &app.address, &other_key).await,
        StatusCode::ACCEPTED,
        "another tenant at the same moment is unaffected"
    );
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        send_with(&app.client, &app.address, &app.key).await,
        StatusCode::ACCEPTED,
        "after Retry-After it passes"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_counts_each_of_its_events_against_the_limit() {
    let overrides = [("rate_limits.per_second", "5"), ("rate_limits.burst", "5")];
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &overrides).await;
    let mut event = email_event();
    event["kind"] = json!("email");
    let batch = |n: usize| json!({"events": vec![event.clone(); n]});
    assert_eq!(
        app.post_json("/v1/batch", &batch(4)).await.status(),
        StatusCode::ACCEPTED
    );
    let over = app.post_json("/v1/batch", &batch(2)).await;
    assert_eq!(
        over.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "4 + 2 events exceed a burst of 5"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_name_is_printable_and_bounded() {
    let overrides = [("admin.token", ADMIN_TOKEN)];
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &overrides).await;
    let admin = Admin {
        client: &app.client,
        address: &app.address,
    };
    for name in ["bell\u{7}ring", "line\nbreak", "   ", &"n".repeat(201)] {
        let refused = admin
            .post("/admin/tenants", json!({"name": name, "id": "named"}))
            .await;
        assert_eq!(
            refused.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["details"][0]["field"], "name", "{body}");
    }
    let created = admin
        .post(
            "/admin/tenants",
            json!({"name": "Zoé's Café — Paris", "id": "named"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    app.stop().await;
}

/// Runs `herald` with `args` in a fresh directory (embedded defaults), with `env` set;
/// answers its exit status and what it wrote to stderr.
fn herald_cli(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .current_dir(dir.path())
        .args(args)
        .env_remove("RABBITMQ_URL")
        .env_remove("DATABASE_URL")
        .env_remove("HERALD__ADMIN__TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The command line says what went wrong, once, in plain text (stderr is not a terminal
/// here), and exits non-zero; a database it cannot reach is named without its password.
#[test]
fn the_cli_reports_an_error_once_plainly_and_fails() {
    let (status, stderr) = herald_cli(&["tenant", "keys", "nosuch"], &[]);
    assert!(!status.success(), "{stderr}");
    assert_eq!(stderr.matches("no tenant").count(), 1, "{stderr}");

    // Logs written to a pipe are plain text.
    let (status, stderr) = herald_cli(&["migrate"], &[]);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("INFO"), "it logs: {stderr:?}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr:?}");

    let (status, stderr) = herald_cli(
        &["tenant", "keys", "acme"],
        &[(
            "DATABASE_URL",
            "postgres://herald:sesame-secret@127.0.0.1:1/herald",
        )],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("sesame-secret"), "{stderr}");
}
