//! The API document is the contract: `/openapi.json` states what the API takes and
//! answers, and schemathesis, a client that knows nothing of Herald but the document,
//! finds no disagreement between the two.
//!
//! Schemathesis is installed by `.ci/run` (pinned, in a virtualenv); `HERALD_SCHEMATHESIS`
//! names another. Without it the run is skipped with a message, except under `CI=true`,
//! where it fails.

use crate::support::TestApp;
use herald::app::Roles;
use herald::config::BrokerKind;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The pinned version, which `.ci/run` installs.
const SCHEMATHESIS: &str = "4.32.5";

/// The admin token the contract run uses.
const ADMIN_TOKEN: &str = "contract-admin-token-0123456789";

/// Where schemathesis is, or `None` (a skip) when it is not installed outside CI.
fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("HERALD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(format!(
                ".cache/herald-ci/schemathesis-{SCHEMATHESIS}/bin/schemathesis"
            ))
        });
    if path.exists() {
        return Some(path);
    }
    crate::support::tool_missing(&format!(
        "schemathesis is not installed at {}; run .ci/run or set HERALD_SCHEMATHESIS",
        path.display()
    ));
    None
}

async fn spawn() -> TestApp {
    TestApp::spawn(
        BrokerKind::Embedded,
        Roles::everything(),
        &[("admin.token", ADMIN_TOKEN)],
    )
    .await
}

async fn document(app: &TestApp) -> Value {
    app.get("/openapi.json").await.json().await.unwrap()
}

/// The status codes the document lists for `method` on `path`.
fn statuses(doc: &Value, path: &str, method: &str) -> Vec<String> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is documented"))
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_what_the_api_takes() {
    let app = spawn().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];

    // Enumerations as the API reads them.
    assert_eq!(
        schemas["MessageType"]["enum"],
        json!(["text", "image", "file", "system"])
    );
    assert_eq!(
        schemas["ConversationType"]["enum"],
        json!(["direct", "group"])
    );
    assert_eq!(schemas["Platform"]["enum"], json!(["mobile", "web"]));
    assert_eq!(schemas["Priority"]["enum"], json!(["normal", "high"]));

    // What has a default, or comes from the key, is not required.
    let required = |schema: &str| -> Vec<String> {
        serde_json::from_value(schemas[schema]["required"].clone()).unwrap()
    };
    for (schema, optional) in [
        ("ChatMessage", &["tenantId", "conversationType"][..]),
        (
            "PushNotification",
            &["tenantId", "data", "platform", "priority", "inApp"][..],
        ),
        ("EmailNotification", &["tenantId", "data"][..]),
        ("AuditEvent", &["tenantId", "compliance"][..]),
    ] {
        for field in optional {
            assert!(
                !required(schema).iter().any(|r| r == field),
                "{schema}.{field} is optional"
            );
        }
    }
    assert_eq!(
        required("PushNotification"),
        ["recipientIds", "title", "body"]
    );

    // A tenant id is a string or a whole number.
    let tenant = &schemas["ChatMessage"]["properties"]["tenantId"]["oneOf"][0]["oneOf"];
    assert_eq!(tenant[0]["type"], "string");
    assert_eq!(tenant[1]["type"], "integer");

    // A batch's events are typed by their kind.
    let kinds = schemas["Batch"]["properties"]["events"]["items"]["oneOf"]
        .as_array()
        .unwrap();
    let documented: Vec<_> = kinds
        .iter()
        .map(|k| {
            (
                k["allOf"][0]["$ref"].as_str().unwrap().to_owned(),
                k["allOf"][1]["properties"]["kind"]["enum"][0].clone(),
            )
        })
        .collect();
    assert_eq!(
        documented,
        [
            ("#/components/schemas/ChatMessage".to_owned(), json!("chat")),
            (
                "#/components/schemas/PushNotification".into(),
                json!("push")
            ),
            (
                "#/components/schemas/EmailNotification".into(),
                json!("email")
            ),
            ("#/components/schemas/AuditEvent".into(), json!("audit")),
            ("#/components/schemas/UserUpdate".into(), json!("update")),
        ]
    );

    // Typed provider bodies.
    assert!(schemas["SmtpBody"]["properties"]["port"].is_object());
    assert!(schemas["FcmBody"]["properties"]["project_id"].is_object());

    // Every status a send can answer.
    for path in [
        "/v1/chat/messages",
        "/v1/notifications/push",
        "/v1/notifications/email",
        "/v1/audit/events",
        "/v1/batch",
    ] {
        let listed = statuses(&doc, path, "post");
        for status in [
            "202", "400", "401", "403", "409", "413", "415", "422", "429", "503",
        ] {
            assert!(
                listed.iter().any(|s| s == status),
                "POST {path} documents {status}"
            );
        }
    }
    assert!(statuses(&doc, "/v1/realtime", "get").contains(&"426".to_owned()));

    // Query parameters are in the query.
    let audit = doc["paths"]["/v1/audit/events"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(audit.iter().all(|p| p["in"] == "query"), "{audit:?}");

    // The configured bound of a request is the one stated.
    let lifetime = &schemas["TokenRequest"]["properties"]["ttlSeconds"]["oneOf"][0];
    assert_eq!(lifetime["maximum"], 86_400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_between_the_document_and_the_api() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let app = spawn().await;
    let operations: usize = document(&app).await["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|methods| methods.as_object().unwrap().len())
        .sum();
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/contract");
    let report = app.dir.path().join("schemathesis");
    let mut command = std::process::Command::new(&schemathesis);
    command
        .arg("--config-file")
        .arg(contract.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", app.address))
        .args(["--checks", "all", "--mode", "all", "--max-examples", "25"])
        // A fixed seed: CI runs the same cases each time; change it to explore.
        .args(["--seed", "20261204", "--generation-database", "none"])
        .args(["--no-color", "--report-dir"])
        .arg(&report)
        .env("HERALD_API_KEY", &app.key)
        .env("HERALD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &contract)
        // Schemathesis keeps a cache where it runs: the test's directory, not the clone.
        .current_dir(app.dir.path());
    let run = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "schemathesis found disagreements:\n{stdout}\n{stderr}"
    );
    // It did test every operation.
    assert!(
        stdout.contains(&format!("Tested: {operations}\n")),
        "{stdout}"
    );
    app.stop().await;
}
