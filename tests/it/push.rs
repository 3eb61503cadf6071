//! Push end to end: devices registered over the API, pushes delivered by the push worker to
//! real servers standing in for APNs (HTTP/2 over TLS) and for FCM and Google's token
//! endpoint, with the paths, headers, JWT claims and bodies Apple and Google document;
//! bad tokens pruned, 429s honoured, refused credentials not hammered.

use crate::support::TestApp;
use herald::app::Roles;
use herald::config::BrokerKind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::push_providers::{ApnsStandIn, FcmStandIn, Received};

const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const TOPIC: &str = "com.example.herald";
const ACCOUNT: &str = "herald@test-project.iam.gserviceaccount.com";

/// Herald with its push worker pointed at the stand-ins, and the tenant's APNs key and FCM
/// service account set through the API.
struct PushRig {
    app: TestApp,
    apns: ApnsStandIn,
    fcm: FcmStandIn,
    _keys: tempfile::TempDir,
}

async fn rig() -> PushRig {
    rig_with(&[]).await
}

/// The rig with more settings.
async fn rig_with(extra: &[(&str, &str)]) -> PushRig {
    let apns = ApnsStandIn::start().await;
    let fcm = FcmStandIn::start().await;
    let mut overrides = vec![
        ("push.apns.url", apns.url.as_str()),
        ("push.apns.sandbox_url", apns.url.as_str()),
        ("push.tls_ca_file", apns.ca_file.as_str()),
        ("push.fcm.url", fcm.url.as_str()),
        ("queues.push.backoff", "[\"100ms\"]"),
        // The tenant's service account names the stand-in, on loopback, as its token_uri.
        ("providers.allow_private_addresses", "true"),
    ];
    overrides.extend_from_slice(extra);
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &overrides).await;
    let keys = tempfile::TempDir::new().unwrap();
    let (p8, point) = testkit::keys::p256_key(keys.path());
    apns.accept_key(KEY_ID, point, TEAM_ID);
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/providers/apns",
            Some(&json!({"keyId": KEY_ID, "teamId": TEAM_ID, "topic": TOPIC, "privateKey": p8, "environment": "sandbox"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["privateKey"], "[redacted]");
    let (rsa, public) = testkit::keys::rsa_key(keys.path());
    fcm.accept_account(ACCOUNT, public);
    // The service account JSON as Google issues it, extra fields and all.
    let account = json!({
        "type": "service_account", "project_id": "test-project", "private_key_id": "abc",
        "private_key": rsa, "client_email": ACCOUNT, "client_id": "1",
        "token_uri": fcm.token_url(),
    });
    let (status, body) = app
        .call(Method::PUT, "/v1/providers/fcm", Some(&account))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["private_key"], "[redacted]");
    let (_, shown) = app.call(Method::GET, "/v1/providers/fcm", None).await;
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");
    PushRig {
        app,
        apns,
        fcm,
        _keys: keys,
    }
}

async fn register(app: &TestApp, user: &str, platform: &str, token: &str) {
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/v1/users/{user}/devices"),
            Some(&json!({"platform": platform, "token": token})),
        )
        .await;
    assert!(status.is_success(), "{body}");
}

async fn send(app: &TestApp, push: Value) -> String {
    let (status, body) = app
        .call(Method::POST, "/v1/notifications/push", Some(&push))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn settled(status: &Value) -> bool {
    matches!(
        status["status"].as_str(),
        Some("delivered" | "partially_delivered" | "failed")
    )
}

fn only<'a>(received: &'a [Received], token: &str) -> &'a Received {
    let matching: Vec<_> = received.iter().filter(|r| r.token == token).collect();
    assert_eq!(matching.len(), 1, "one request for {token}");
    matching[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_and_fcm_get_what_apple_and_google_document() {
    let rig = rig().await;
    let app = &rig.app;
    register(app, "ada", "ios", "ios-ada").await;
    register(app, "ada", "android", "android-ada").await;
    register(app, "bob", "web", "web-bob").await;

    let id = send(
        app,
        json!({
            "recipientIds": ["ada", "bob"], "title": "Order shipped", "body": "Arrives Tuesday",
            "data": {"orderId": 7, "kind": "order"}, "priority": "high", "collapseKey": "order-7",
            "ttlSeconds": 600, "badge": 3, "sound": "chime.caf",
        }),
    )
    .await;
    let status = app.notification_when(&id, settled).await;
    // Bob has no mobile device: his part of a mobile push fails; Ada's two devices get it.
    assert_eq!(status["status"], "partially_delivered", "{status}");

    let apns = rig.apns.received();
    let push = only(&apns, "ios-ada");
    assert_eq!(push.status, 200);
    let header = |name: &str| push.headers.get(name).map(String::as_str);
    assert_eq!(header("apns-topic"), Some(TOPIC));
    assert_eq!(header("apns-push-type"), Some("alert"));
    assert_eq!(header("apns-priority"), Some("10"));
    assert_eq!(header("apns-collapse-id"), Some("order-7"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiration: u64 = header("apns-expiration").unwrap().parse().unwrap();
    assert!(
        (now + 590..=now + 610).contains(&expiration),
        "{expiration}"
    );
    assert!(uuid::Uuid::parse_str(header("apns-id").unwrap()).is_ok());
    assert_eq!(
        push.claims["iss"], TEAM_ID,
        "the JWT was checked: {:?}",
        push.claims
    );
    assert_eq!(
        push.body,
        json!({
            "aps": {"alert": {"title": "Order shipped", "body": "Arrives Tuesday"}, "badge": 3, "sound": "chime.caf"},
            "orderId": 7, "kind": "order",
        })
    );

    let grants = rig.fcm.grants();
    assert_eq!(grants.len(), 1, "one access token, reused");
    assert_eq!(grants[0]["iss"], ACCOUNT);
    assert_eq!(
        grants[0]["exp"].as_u64().unwrap() - grants[0]["iat"].as_u64().unwrap(),
        3600
    );
    let fcm = rig.fcm.received();
    let message = only(&fcm, "android-ada");
    assert_eq!(message.status, 200);
    assert_eq!(
        message.headers["authorization"], "Bearer ya29.test-1",
        "the access token authorises the send"
    );
    let message = &message.body["message"];
    assert_eq!(
        message["notification"],
        json!({"title": "Order shipped", "body": "Arrives Tuesday"})
    );
    assert_eq!(
        message["data"],
        json!({"orderId": "7", "kind": "order"}),
        "data values are strings"
    );
    assert_eq!(message["android"]["priority"], "HIGH");
    assert_eq!(message["android"]["ttl"], "600s");
    assert_eq!(message["android"]["collapse_key"], "order-7");
    assert_eq!(message["apns"]["headers"]["apns-priority"], "10");
    assert!(
        fcm.iter().all(|r| r.token != "web-bob"),
        "a mobile push skips web devices"
    );

    let deliveries = status["deliveries"].as_array().unwrap();
    let device = |token: &str| deliveries.iter().find(|d| d["target"] == token).unwrap();
    assert_eq!(device("ios-ada")["status"], "delivered");
    assert!(
        device("ios-ada")["reply"]
            .as_str()
            .unwrap()
            .starts_with("APNs 200")
    );
    assert_eq!(device("android-ada")["status"], "delivered");
    // Bob has no mobile device: nothing to deliver to is a final state of its own.
    let bob = deliveries.iter().find(|d| d["recipient"] == "bob").unwrap();
    assert_eq!(bob["status"], "undeliverable");
    assert!(
        bob["lastError"]
            .as_str()
            .unwrap()
            .contains("no mobile device")
    );

    // A web push goes to web devices only, through FCM's web push options.
    let id = send(
        app,
        json!({"recipientIds": ["bob"], "title": "Hi", "body": "There", "platform": "web", "ttlSeconds": 60}),
    )
    .await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let fcm = rig.fcm.received();
    let web = &only(&fcm, "web-bob").body["message"];
    assert_eq!(web["webpush"]["headers"]["TTL"], "60");
    assert_eq!(web["webpush"]["headers"]["Urgency"], "normal");
    assert_eq!(web["webpush"]["notification"]["title"], "Hi");
    assert_eq!(
        rig.fcm.grants().len(),
        1,
        "the access token is still reused"
    );
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_recipients_get_each_device_once_and_bad_tokens_are_pruned() {
    let rig = rig().await;
    let app = &rig.app;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..1000 {
        let user = format!("user{i}");
        let (platform, prefix) = match i % 3 {
            0 => ("ios", "ios"),
            1 => ("android", "and"),
            _ => ("web", "web"),
        };
        let token = match i % 50 {
            7 => format!("gone-{prefix}-{i}"),
            13 => format!("invalid-{prefix}-{i}"),
            _ => format!("{prefix}-{i}"),
        };
        register(app, &user, platform, &token).await;
        let list = if token.starts_with("gone-") || token.starts_with("invalid-") {
            &mut bad
        } else {
            &mut good
        };
        list.push((user.clone(), platform, token));
        if i % 10 == 0 {
            // Some users have a second device, of the other mobile kind.
            let token = format!("and-extra-{i}");
            register(app, &user, "android", &token).await;
            good.push((user, "android", token));
        }
    }
    let everyone: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
    let mobile = send(
        app,
        json!({"recipientIds": everyone, "title": "Sale", "body": "Today only"}),
    )
    .await;
    let web = send(
        app,
        json!({"recipientIds": everyone, "title": "Sale", "body": "Today only", "platform": "web"}),
    )
    .await;
    let mobile = app.notification_when(&mobile, settled).await;
    let web = app.notification_when(&web, settled).await;
    assert_eq!(mobile["status"], "partially_delivered");
    assert_eq!(web["status"], "partially_delivered");

    // Every good device got the push exactly once, from the provider of its kind.
    let mut received: HashMap<String, usize> = HashMap::new();
    for request in rig.apns.received().iter().chain(rig.fcm.received().iter()) {
        *received.entry(request.token.clone()).or_default() += 1;
    }
    for (_, _, token) in &good {
        assert_eq!(received.get(token), Some(&1), "{token} got the push once");
    }
    for (_, _, token) in &bad {
        assert_eq!(
            received.get(token),
            Some(&1),
            "{token} was tried once, not retried"
        );
    }
    assert_eq!(
        received.len(),
        good.len() + bad.len(),
        "no other token was pushed to"
    );
    assert_eq!(
        rig.apns.connections(),
        1,
        "every APNs push went over one multiplexed connection"
    );

    // The bad tokens are gone from the registry; the good ones stay.
    for (user, _, token) in bad.iter().chain(good.iter().take(20)) {
        let (_, devices) = app
            .call(Method::GET, &format!("/v1/users/{user}/devices"), None)
            .await;
        let listed = devices["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["token"] == token.as_str());
        let is_bad = token.starts_with("gone-") || token.starts_with("invalid-");
        assert_eq!(listed, !is_bad, "{token} in {devices}");
    }

    // The ledger accounts for every device: one row per token, in its final state.
    let mut rows: HashMap<String, (String, String)> = HashMap::new();
    for status in [&mobile, &web] {
        for d in status["deliveries"].as_array().unwrap() {
            let target = d["target"].as_str().unwrap();
            if !target.is_empty() {
                rows.insert(
                    target.to_owned(),
                    (
                        d["status"].as_str().unwrap().to_owned(),
                        d["lastError"].to_string(),
                    ),
                );
            }
        }
    }
    assert_eq!(rows.len(), good.len() + bad.len());
    for (_, _, token) in &good {
        assert_eq!(rows[token].0, "delivered", "{token}");
    }
    for (_, _, token) in &bad {
        assert_eq!(rows[token].0, "failed", "{token}");
        assert!(
            rows[token].1.contains("removed from the registry"),
            "{:?}",
            rows[token]
        );
    }
    // And every recipient has its summary row.
    let recipients = |status: &Value| {
        status["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["target"] == "")
            .count()
    };
    assert_eq!(recipients(&mobile), 1000);
    assert_eq!(recipients(&web), 1000);
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_delivered_after_the_wait_and_not_before() {
    let rig = rig().await;
    let app = &rig.app;
    register(app, "ada", "ios", "slow-ios-ada").await;
    register(app, "ada", "android", "android-ada").await;
    let id = send(
        app,
        json!({"recipientIds": ["ada"], "title": "Hello", "body": "World"}),
    )
    .await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let attempts: Vec<Received> = rig
        .apns
        .received()
        .into_iter()
        .filter(|r| r.token == "slow-ios-ada")
        .collect();
    assert_eq!(
        attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = attempts[1].at - attempts[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "retried after {waited:?}, before the 2 s the provider asked for"
    );
    assert!(
        waited < Duration::from_secs(5),
        "but not much later: {waited:?}"
    );
    let deliveries = status["deliveries"].as_array().unwrap();
    let slow = deliveries
        .iter()
        .find(|d| d["target"] == "slow-ios-ada")
        .unwrap();
    assert_eq!(slow["attempts"], 2);
    // The Android device was delivered on the first attempt and not sent again.
    let android: Vec<_> = rig
        .fcm
        .received()
        .into_iter()
        .filter(|r| r.token == "android-ada")
        .collect();
    assert_eq!(android.len(), 1, "only the failed device is retried");
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_the_tenants_pushes_without_asking_again() {
    let rig = rig().await;
    let app = &rig.app;
    register(app, "ada", "ios", "ios-ada").await;
    // A key Apple does not know.
    let other = tempfile::TempDir::new().unwrap();
    let (unknown, _) = testkit::keys::p256_key(other.path());
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/providers/apns",
            Some(&json!({"keyId": "UNKNOWN123", "teamId": TEAM_ID, "topic": TOPIC, "privateKey": unknown, "environment": "sandbox"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The tenant's settings are read at most a second old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let id = send(
            app,
            json!({"recipientIds": ["ada"], "title": "A", "body": "B"}),
        )
        .await;
        let status = app.notification_when(&id, settled).await;
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["deliveries"][0]["lastError"].to_string();
        assert!(
            error.contains("APNS refused the tenant's credentials"),
            "{error}"
        );
        assert!(error.contains("InvalidProviderToken"), "{error}");
    }
    assert_eq!(
        rig.apns.received().len(),
        1,
        "Apple was asked once, not once per push"
    );

    // New credentials lift it.
    let keys = tempfile::TempDir::new().unwrap();
    let (p8, point) = testkit::keys::p256_key(keys.path());
    rig.apns.accept_key("NEWKEY1234", point, TEAM_ID);
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/providers/apns",
            Some(&json!({"keyId": "NEWKEY1234", "teamId": TEAM_ID, "topic": TOPIC, "privateKey": p8, "environment": "sandbox"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let id = send(
        app,
        json!({"recipientIds": ["ada"], "title": "A", "body": "B"}),
    )
    .await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "delivered", "{status}");
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_providers_pushes_go_to_the_outbox_and_devices_move_between_users() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    register(&app, "ada", "ios", "tok-1").await;
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/users/ada/devices",
            Some(&json!({"platform": "ios", "token": "tok-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "registering again is not new");
    // Bob registers the same token: it is his now.
    let (status, device) = app
        .call(
            Method::PUT,
            "/v1/users/bob/devices",
            Some(&json!({"platform": "ios", "token": "tok-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(device["userId"], "bob");
    let (_, ada) = app.call(Method::GET, "/v1/users/ada/devices", None).await;
    assert_eq!(ada["items"], json!([]));
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/users/bob/devices",
            Some(&json!({"platform": "blackberry", "token": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["platform", "token"]);

    let id = send(
        &app,
        json!({"recipientIds": ["bob"], "title": "Hi", "body": "Bob"}),
    )
    .await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let lines =
        std::fs::read_to_string(app.dir.path().join("outbox/push.jsonl")).unwrap_or_default();
    let line: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(line["token"], "tok-1");
    assert_eq!(line["userId"], "bob");
    assert_eq!(line["notification"]["title"], "Hi");

    let (status, _) = app
        .call(Method::DELETE, "/v1/users/bob/devices/tok-1", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(Method::DELETE, "/v1/users/bob/devices/tok-1", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_pushes_keep_to_the_tenants_rate_limit() {
    let rig = rig_with(&[("push.rate_limits.per_tenant", "5")]).await;
    for i in 0..10 {
        register(&rig.app, &format!("u{i}"), "ios", &format!("ios-{i}")).await;
    }
    let everyone: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let id = send(
        &rig.app,
        json!({"recipientIds": everyone, "title": "A", "body": "B"}),
    )
    .await;
    let status = rig.app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let times: Vec<_> = rig.apns.received().iter().map(|r| r.at).collect();
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    // 10 pushes at 5 a second, with no burst: the last goes out about 1.8 s after the first.
    assert!(
        spread >= Duration::from_millis(1500),
        "sent within {spread:?}"
    );
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_credentials_serve_tenants_without_their_own() {
    let apns = ApnsStandIn::start().await;
    let fcm = FcmStandIn::start().await;
    let keys = tempfile::TempDir::new().unwrap();
    let (p8, point) = testkit::keys::p256_key(keys.path());
    apns.accept_key("GLOBALKEY1", point, TEAM_ID);
    let (rsa, public) = testkit::keys::rsa_key(keys.path());
    fcm.accept_account(ACCOUNT, public);
    let account = keys.path().join("service-account.json");
    std::fs::write(
        &account,
        json!({"type": "service_account", "project_id": "global-project", "private_key": rsa,
               "client_email": ACCOUNT, "token_uri": fcm.token_url()})
        .to_string(),
    )
    .unwrap();
    let account = account.display().to_string();
    // JSON-quoted, so that the override parser keeps the key's line breaks.
    let p8 = serde_json::to_string(&p8).unwrap();
    let overrides = [
        ("push.apns.url", apns.url.as_str()),
        ("push.apns.sandbox_url", apns.url.as_str()),
        ("push.tls_ca_file", apns.ca_file.as_str()),
        ("push.fcm.url", fcm.url.as_str()),
        ("push.apns.credentials.key_id", "GLOBALKEY1"),
        ("push.apns.credentials.team_id", TEAM_ID),
        ("push.apns.credentials.topic", TOPIC),
        ("push.apns.credentials.private_key", p8.as_str()),
        ("push.apns.credentials.environment", "sandbox"),
        ("push.fcm.service_account_file", account.as_str()),
    ];
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &overrides).await;
    register(&app, "ada", "ios", "ios-ada").await;
    register(&app, "ada", "android", "android-ada").await;
    let id = send(
        &app,
        json!({"recipientIds": ["ada"], "title": "A", "body": "B"}),
    )
    .await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(
        only(&apns.received(), "ios-ada").headers["apns-topic"],
        TOPIC
    );
    assert_eq!(only(&fcm.received(), "android-ada").status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_app_push_reaches_a_user_without_devices_and_nothing_to_deliver_to_is_final() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let push = |in_app: bool| json!({"recipientIds": ["no-device"], "title": "Hi", "body": "There", "inApp": in_app});
    let send = |body: Value| {
        let app = &app;
        async move {
            let (status, body) = app
                .call(Method::POST, "/v1/notifications/push", Some(&body))
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let settled = |s: &Value| s["status"] != "queued";

    // In the app, the user's inbox is somewhere to deliver to.
    let id = send(push(true)).await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let inbox = status["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "inbox")
        .unwrap_or_else(|| panic!("the inbox is a delivery: {status}"));
    assert_eq!(inbox["status"], "delivered");
    let (_, items) = app
        .call(Method::GET, "/v1/users/no-device/inbox", None)
        .await;
    assert_eq!(items["items"].as_array().unwrap().len(), 1, "{items}");

    // Without it there is nowhere: a final state of its own, acknowledged, not a dead
    // letter an operator could replay to any effect.
    let id = send(push(false)).await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "undeliverable", "{status}");
    assert_eq!(status["deliveries"][0]["status"], "undeliverable");
    assert!(
        status["deliveries"][0]["lastError"]
            .as_str()
            .unwrap()
            .contains("no mobile device registered"),
        "{status}"
    );
    let spec = app.herald.topology.queue(herald::domain::EventKind::Push);
    let dead = app
        .herald
        .broker
        .queue_stats(&spec.dead_letter_queue())
        .await
        .unwrap();
    assert_eq!(dead.message_count, 0, "nothing was dead-lettered");
    app.stop().await;
}

/// A tenant's service account may only send its signed grant to Google: a `token_uri`
/// elsewhere is 422 naming it, and one already stored fails the push without a request
/// to it. (A tenant's APNs settings name no endpoint: only `environment`, which picks one
/// of the operator's two URLs.) The rig above shows the operator's allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_token_uri_must_be_googles_unless_the_operator_allows_others() {
    let fcm = FcmStandIn::start().await;
    let app = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::everything(),
        &[("push.fcm.url", fcm.url.as_str())],
    )
    .await;
    let keys = tempfile::TempDir::new().unwrap();
    let (rsa, public) = testkit::keys::rsa_key(keys.path());
    fcm.accept_account(ACCOUNT, public);
    let account = |token_uri: &str| {
        json!({"type": "service_account", "project_id": "test-project", "private_key": rsa,
               "client_email": ACCOUNT, "token_uri": token_uri})
    };
    for token_uri in [
        fcm.token_url(),
        "http://oauth2.googleapis.com/token".to_owned(),
        "https://oauth2.googleapis.com.evil.example/token".to_owned(),
        "https://169.254.169.254/token".to_owned(),
    ] {
        let (status, body) = app
            .call(Method::PUT, "/v1/providers/fcm", Some(&account(&token_uri)))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{token_uri}: {body}"
        );
        assert_eq!(body["error"]["details"][0]["field"], "token_uri", "{body}");
    }
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/providers/fcm",
            Some(&account("https://oauth2.googleapis.com/token")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let tenant = herald::domain::TenantId::parse("1").unwrap();
    app.herald
        .store
        .put_provider(&tenant, "fcm", &account(&fcm.token_url()).to_string())
        .await
        .unwrap();
    register(&app, "ada", "android", "android-ada").await;
    let id = send(
        &app,
        json!({"recipientIds": ["ada"], "title": "A", "body": "B"}),
    )
    .await;
    let status = app.notification_when(&id, settled).await;
    assert_eq!(status["status"], "failed", "{status}");
    let error = status["deliveries"][0]["lastError"].as_str().unwrap();
    assert!(error.contains("token_uri"), "{error}");
    assert!(fcm.grants().is_empty(), "no grant left Herald");
    app.stop().await;
}
