//! Email end to end: Herald renders templates and sends one message per recipient to a
//! real SMTP relay (aiosmtpd), retries 4xx replies, fails 5xx ones for their recipient
//! only, and keeps each recipient's fate in the ledger. Template authoring round trips
//! through the API.

use crate::support::TestApp;
use crate::support::smtp_relay::SmtpRelay;
use herald::app::Roles;
use herald::config::BrokerKind;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A relay, and Herald sending through it with quick retries; `None` where the relay
/// cannot run here.
async fn relay_and_herald() -> Option<(SmtpRelay, TestApp)> {
    relay_and_herald_with(&[], &[]).await
}

/// [`relay_and_herald`], with the relay script's `relay_args` and more settings overrides.
async fn relay_and_herald_with(
    relay_args: &[&str],
    more: &[(&str, &str)],
) -> Option<(SmtpRelay, TestApp)> {
    let relay = SmtpRelay::start_with(relay_args)?;
    let mut overrides = relay.overrides();
    overrides.push(("queues.email.backoff", "[\"300ms\"]"));
    overrides.extend_from_slice(more);
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &overrides).await;
    Some((relay, app))
}

async fn send(app: &TestApp, event: Value) -> String {
    let (status, body) = app
        .call(Method::POST, "/v1/notifications/email", Some(&event))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn header<'a>(message: &'a Value, name: &str) -> Vec<&'a str> {
    message["headers"][name]
        .as_array()
        .map(|values| values.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn part<'a>(message: &'a Value, content_type: &str) -> &'a str {
    message["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["contentType"] == content_type)
        .unwrap_or_else(|| panic!("no {content_type} part in {message}"))["body"]
        .as_str()
        .unwrap()
}

fn final_status(status: &Value) -> bool {
    matches!(
        status["status"].as_str(),
        Some("delivered" | "partially_delivered" | "failed")
    )
}

/// Sends the built-in welcome email to `to` and answers its status once it is settled.
async fn welcome_settled(app: &TestApp, to: &[&str]) -> Value {
    let id = send(
        app,
        json!({"to": to, "template": "welcome", "data": {"name": "Ada"}}),
    )
    .await;
    app.notification_when(&id, final_status).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recipient_gets_its_own_rendered_message_with_proper_headers() {
    let Some((relay, app)) = relay_and_herald().await else {
        return;
    };
    let id = send(
        &app,
        json!({
            "to": ["ada@example.com", "bob@example.org"],
            "template": "welcome",
            // A line break in data must not reach a header.
            "data": {"name": "Ada <3\r\nBcc: eve@evil.example"},
        }),
    )
    .await;

    let received = relay.wait_for(2).await;
    assert_eq!(received.len(), 2, "one message per recipient");
    let mut recipients = Vec::new();
    for message in &received {
        let rcpt: Vec<&str> = message["rcptTos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(rcpt.len(), 1, "each message has one envelope recipient");
        assert_eq!(
            message["pipelined"], true,
            "MAIL, RCPT and DATA went in one group, as the relay offers PIPELINING"
        );
        assert_eq!(header(message, "to"), rcpt, "and names only that recipient");
        recipients.push(rcpt[0].to_owned());
        assert_eq!(
            header(message, "from"),
            ["Herald <no-reply@herald.localhost>"]
        );
        assert_eq!(
            header(message, "subject"),
            ["Welcome, Ada <3 Bcc: eve@evil.example!"]
        );
        assert!(header(message, "bcc").is_empty(), "no header was injected");
        assert_eq!(header(message, "date").len(), 1);
        let message_id = header(message, "message-id");
        assert!(
            message_id.len() == 1 && message_id[0].contains(&id),
            "{message_id:?}"
        );
        assert_eq!(header(message, "mime-version"), ["1.0"]);
        assert_eq!(message["contentType"], "multipart/alternative");
        let html = part(message, "text/html");
        assert!(
            html.contains("Welcome, Ada &lt;3"),
            "HTML is escaped: {html}"
        );
        assert!(html.contains("<!doctype html>"), "in the layout");
        let text = part(message, "text/plain");
        assert!(text.contains("Welcome, Ada <3"), "text is not: {text}");
    }
    recipients.sort();
    assert_eq!(recipients, ["ada@example.com", "bob@example.org"]);

    let status = app.notification_when(&id, final_status).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["template"]["name"], "welcome");
    for delivery in status["deliveries"].as_array().unwrap() {
        assert_eq!(delivery["status"], "delivered");
        assert!(
            delivery["reply"].as_str().unwrap().starts_with("250"),
            "the relay's reply is kept: {delivery}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_one_session_go_in_a_pipeline() {
    let Some((relay, app)) = relay_and_herald_with(&[], &[("email.pool_size", "1")]).await else {
        return;
    };
    let to = [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ];
    let status = welcome_settled(&app, &to).await;
    assert_eq!(status["status"], "delivered", "{status}");

    // One session, four messages queued on it at once: each content but the last went in
    // the same write as the next message's MAIL, RCPT and DATA.
    let received = relay.received();
    assert_eq!(received.len(), 4);
    let followed = received
        .iter()
        .filter(|m| m["nextMailPipelined"] == true)
        .count();
    assert_eq!(followed, 3, "{received:#?}");
    let mut recipients: Vec<&str> = received
        .iter()
        .map(|m| m["rcptTos"][0].as_str().unwrap())
        .collect();
    recipients.sort();
    assert_eq!(recipients, to);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_relay_closed_while_idle_is_replaced_without_a_retry() {
    let Some((relay, app)) = relay_and_herald_with(&["--idle-timeout", "0.5"], &[]).await else {
        return;
    };
    let status = welcome_settled(&app, &["ada@example.com"]).await;
    assert_eq!(status["deliveries"][0]["attempts"], 1, "{status}");
    // The relay hangs up on the idle session; Herald's pool still holds it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let status = welcome_settled(&app, &["bob@example.com"]).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(
        status["deliveries"][0]["attempts"], 1,
        "the message went on a new session, not back to the queue: {status}"
    );
    assert_eq!(relay.received().len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_451_is_retried_and_delivered_on_the_next_attempt() {
    let Some((relay, app)) = relay_and_herald().await else {
        return;
    };
    let status = welcome_settled(&app, &["busy-1@example.com"]).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let delivery = &status["deliveries"][0];
    assert_eq!(delivery["attempts"], 2, "delivered on the second attempt");
    assert_eq!(relay.received().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_refuses_and_hangs_up_leaves_its_reply_as_the_error() {
    let Some((relay, app)) = relay_and_herald().await else {
        return;
    };
    let status = welcome_settled(&app, &["bye-1@example.com"]).await;
    assert_eq!(status["status"], "failed", "{status}");
    let delivery = &status["deliveries"][0];
    assert_eq!(delivery["attempts"], 3, "a 421 is retried: {delivery}");
    let error = delivery["lastError"].as_str().unwrap();
    assert!(
        error.contains("421 4.3.2"),
        "the relay's reply, not the hang-up after it, is the error: {error}"
    );
    // Mail to others still goes through.
    let status = welcome_settled(&app, &["ada@example.com"]).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["deliveries"][0]["attempts"], 1);
    assert_eq!(
        relay.received().len(),
        1,
        "only the second message was taken"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_550_fails_its_recipient_for_good_and_the_others_are_delivered_once() {
    let Some((relay, app)) = relay_and_herald().await else {
        return;
    };
    let id = send(
        &app,
        json!({
            "to": ["ada@example.com", "reject-1@example.com", "busy-2@example.com"],
            "template": "notification",
            "data": {"title": "Hello", "body": "World"},
        }),
    )
    .await;
    let status = app.notification_when(&id, final_status).await;
    assert_eq!(status["status"], "partially_delivered", "{status}");
    let by_recipient = |address: &str| {
        status["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["recipient"] == address)
            .unwrap()
            .clone()
    };
    let rejected = by_recipient("reject-1@example.com");
    assert_eq!(rejected["status"], "failed");
    assert_eq!(rejected["attempts"], 1, "a 5xx is not retried");
    let error = rejected["lastError"].as_str().unwrap();
    assert!(
        error.contains("550"),
        "the reply is the last error: {error}"
    );
    assert_eq!(by_recipient("ada@example.com")["status"], "delivered");
    assert_eq!(by_recipient("ada@example.com")["attempts"], 1);
    let busy = by_recipient("busy-2@example.com");
    assert_eq!(busy["status"], "delivered");
    assert_eq!(busy["attempts"], 2);

    // The retry went to the busy recipient only: ada got one message, not two.
    let received = relay.received();
    let to_ada = received
        .iter()
        .filter(|m| m["rcptTos"][0] == "ada@example.com")
        .count();
    assert_eq!(to_ada, 1, "a retry does not resend to delivered recipients");
    assert_eq!(received.len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_round_trip_through_the_api_and_a_send_renders_the_newest_version() {
    let Some((relay, app)) = relay_and_herald().await else {
        return;
    };
    let path = "/v1/templates/order-shipped";

    let (status, body) = app
        .call(
            Method::PUT,
            path,
            Some(&json!({
                "subject": "Order {{orderId}} shipped",
                "html": "<p>Your order <b>{{orderId}}</b> is on its way.</p>",
                "sampleData": {"orderId": "A-1"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], 1);

    let (status, body) = app.call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["subject"], "Order {{orderId}} shipped");
    assert_eq!(body["versions"], json!([1]));

    let (status, preview) = app
        .call(Method::POST, &format!("{path}/preview"), Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["subject"], "Order A-1 shipped",
        "sample data by default"
    );
    assert!(preview["html"].as_str().unwrap().contains("<b>A-1</b>"));
    assert!(
        preview["text"]
            .as_str()
            .unwrap()
            .contains("Your order A-1 is on its way."),
        "the text is derived from the HTML: {preview}"
    );
    assert!(relay.received().is_empty(), "a preview sends nothing");

    let (status, body) = app
        .call(
            Method::PUT,
            path,
            Some(&json!({
                "subject": "Shipped: {{orderId}}",
                "html": "<p>Order {{orderId}} left the warehouse.</p>",
                "text": "Order {{orderId}} left the warehouse.",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["versions"], json!([1, 2]));
    let (_, first) = app
        .call(Method::GET, &format!("{path}?version=1"), None)
        .await;
    assert_eq!(first["subject"], "Order {{orderId}} shipped", "v1 is kept");

    let id = send(
        &app,
        json!({"to": ["ada@example.com"], "template": "order-shipped", "data": {"orderId": "B-2"}}),
    )
    .await;
    let received = relay.wait_for(1).await;
    assert_eq!(header(&received[0], "subject"), ["Shipped: B-2"]);
    assert_eq!(
        part(&received[0], "text/plain")
            .replace("\r\n", "\n")
            .trim_end(),
        "Order B-2 left the warehouse.\n\n--\nYou receive this email because of your account with us."
    );
    let status = app.notification_when(&id, final_status).await;
    assert_eq!(
        status["template"],
        json!({"name": "order-shipped", "version": 2}),
        "the send records the version it rendered, and no locale for the default"
    );

    let (status, _) = app.call(Method::DELETE, path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(Method::POST, &format!("{path}/preview"), Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A template that does not compile is refused with the part, line and column.
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/templates/broken",
            Some(&json!({
                "subject": "Fine",
                "html": "<p>\n  {{#if ok}}\n  yes\n{{/each}}</p>",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["field"], "html");
    let message = detail["message"].as_str().unwrap();
    assert!(message.contains("line 4, column"), "{message}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_layout_partial_and_locale_shape_what_is_sent() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::api_only(), &[]).await;
    let put = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let (status, body) = app.call(Method::PUT, path, Some(&body)).await;
            assert!(status.is_success(), "{path}: {body}");
        }
    };
    put(
        "/v1/templates/layout",
        json!({"html": "<main>{{{body}}}</main>{{> _sign}}", "text": "{{{body}}}\n-- {{> _sign}}"}),
    )
    .await;
    put(
        "/v1/templates/_sign",
        json!({"html": "<i>Acme</i>", "text": "Acme"}),
    )
    .await;
    put(
        "/v1/templates/welcome",
        json!({"subject": "Hello {{name}}", "html": "<p>Hello {{name}}</p>", "text": "Hello {{name}}"}),
    )
    .await;
    put(
        "/v1/templates/welcome",
        json!({"locale": "fr", "subject": "Bonjour {{name}}", "html": "<p>Bonjour {{name}}</p>"}),
    )
    .await;

    let preview = |locale: Option<&str>| {
        let mut body = json!({"data": {"name": "Zoé"}});
        if let Some(locale) = locale {
            body["locale"] = json!(locale);
        }
        let app = &app;
        async move {
            let (status, preview) = app
                .call(Method::POST, "/v1/templates/welcome/preview", Some(&body))
                .await;
            assert_eq!(status, StatusCode::OK, "{preview}");
            preview
        }
    };
    let default = preview(None).await;
    assert_eq!(default["subject"], "Hello Zoé");
    assert_eq!(default["html"], "<main><p>Hello Zoé</p></main><i>Acme</i>");
    assert_eq!(default["text"], "Hello Zoé\n-- Acme");
    let canadian = preview(Some("fr-CA")).await;
    assert_eq!(canadian["subject"], "Bonjour Zoé", "fr-CA falls back to fr");
    assert_eq!(canadian["template"]["locale"], "fr");
    assert_eq!(preview(Some("de")).await["subject"], "Hello Zoé");

    // However a locale is written, it is shown one way: in PUT, GET, the list and what a
    // render records.
    let (status, written) = app
        .call(
            Method::PUT,
            "/v1/templates/welcome",
            Some(&json!({"locale": "pt-br", "subject": "Olá {{name}}", "html": "<p>Olá</p>"})),
        )
        .await;
    assert!(status.is_success(), "{written}");
    assert_eq!(written["locale"], "pt-BR");
    let (_, read) = app
        .call(Method::GET, "/v1/templates/welcome?locale=PT-BR", None)
        .await;
    assert_eq!(read["locale"], "pt-BR", "{read}");
    let (_, list) = app.call(Method::GET, "/v1/templates", None).await;
    let listed: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["locale"].clone())
        .collect();
    assert!(listed.contains(&json!("pt-BR")), "{list}");
    assert_eq!(preview(Some("pt-br")).await["template"]["locale"], "pt-BR");

    // A built-in template the tenant does not replace still renders, in the tenant's
    // layout.
    let (_, reset) = app
        .call(
            Method::POST,
            "/v1/templates/password-reset/preview",
            Some(&json!({"data": {"resetUrl": "https://x.example/r"}})),
        )
        .await;
    assert!(
        reset["html"].as_str().unwrap().starts_with("<main>"),
        "{reset}"
    );
    assert_eq!(reset["template"]["version"], Value::Null);

    // Data that does not fit the template is 422, naming what is missing.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/templates/welcome/preview",
            Some(&json!({"data": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("name")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_relay_is_used_and_its_password_never_shown() {
    let Some(relay) = SmtpRelay::start() else {
        return;
    };
    // No relay in configuration: without the tenant's own, email would go to the outbox.
    // The relay runs here, on loopback: the operator allows that, as in development.
    let app = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::everything(),
        &[("providers.allow_private_addresses", "true")],
    )
    .await;
    let settings = json!({
        "host": "127.0.0.1",
        "port": relay.port,
        "security": "plain",
        "username": "acme",
        "password": "s3cret-password",
        "from": "Acme <hello@acme.example>",
    });
    let (status, body) = app
        .call(Method::PUT, "/v1/providers/smtp", Some(&settings))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["password"], "[redacted]");
    let (_, shown) = app.call(Method::GET, "/v1/providers/smtp", None).await;
    assert!(!shown.to_string().contains("s3cret"), "{shown}");
    assert_eq!(shown["host"], "127.0.0.1");

    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/providers/smtp",
            Some(&json!({"host": "", "security": "sometimes"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // aiosmtpd offers no AUTH on a plain connection, so credentials are dropped here;
    // the tenant's relay, sender and routing are what this checks.
    let (status, _) = app.call(Method::DELETE, "/v1/providers/smtp", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut plain = settings.clone();
    plain.as_object_mut().unwrap().remove("username");
    plain.as_object_mut().unwrap().remove("password");
    let (status, _) = app
        .call(Method::PUT, "/v1/providers/smtp", Some(&plain))
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = send(
        &app,
        json!({"to": ["ada@example.com"], "template": "welcome", "data": {"name": "Ada"}}),
    )
    .await;
    let received = relay.wait_for(1).await;
    assert_eq!(received.len(), 1, "the tenant's relay got the message");
    assert_eq!(header(&received[0], "from"), ["Acme <hello@acme.example>"]);
    let status = app.notification_when(&id, final_status).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let outbox = app.dir.path().join("outbox");
    assert!(
        std::fs::read_dir(&outbox).map_or(true, |mut d| d.next().is_none()),
        "nothing went to the outbox"
    );
    app.stop().await;
}

/// Sends one email through a relay that requires TLS (`security`: `starttls` or `tls`) and
/// a login, trusting the relay's CA by configuration; answers what the relay received. The
/// relay does not offer PIPELINING, so these also cover a client waiting for each reply.
async fn send_over_tls(security: &str) -> Option<Value> {
    let certs = tempfile::TempDir::new().unwrap();
    let (ca, cert, key) = testkit::keys::test_certificates(certs.path());
    let mut args = vec![
        "--cert",
        &cert,
        "--key",
        &key,
        "--auth",
        "herald:s3cret",
        "--no-pipelining",
    ];
    if security == "tls" {
        args.push("--implicit-tls");
    }
    let relay = SmtpRelay::start_with(&args)?;
    let port = relay.port.to_string();
    let overrides = [
        ("email.smtp.host", "localhost"),
        ("email.smtp.port", port.as_str()),
        ("email.smtp.security", security),
        ("email.smtp.username", "herald"),
        ("email.smtp.password", "s3cret"),
        ("email.tls_ca_file", ca.as_str()),
    ];
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &overrides).await;
    let status = welcome_settled(&app, &["ada@example.com"]).await;
    assert_eq!(status["status"], "delivered", "{status}");
    let received = relay.wait_for(1).await;
    app.stop().await;
    Some(received[0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_and_credentials_are_sent_over_it() {
    let Some(received) = send_over_tls("starttls").await else {
        return;
    };
    assert_eq!(received["tls"], true, "the message went over TLS");
    assert_eq!(received["authUser"], "herald", "after logging in");
    assert_eq!(
        received["pipelined"], false,
        "each command waited for its reply"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_speaks_tls_from_the_first_byte() {
    let Some(received) = send_over_tls("tls").await else {
        return;
    };
    assert_eq!(received["tls"], true);
    assert_eq!(received["authUser"], "herald");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_email_keeps_to_the_relays_and_the_tenants_rate_limits() {
    for limit in [
        "email.rate_limits.per_relay",
        "email.rate_limits.per_tenant",
    ] {
        let Some((relay, app)) = relay_and_herald_with(&[], &[(limit, "4")]).await else {
            return;
        };
        let to: Vec<String> = (0..8).map(|i| format!("user{i}@example.com")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let status = welcome_settled(&app, &to).await;
        assert_eq!(status["status"], "delivered", "{limit}: {status}");
        assert_eq!(relay.received().len(), 8);
        // 8 messages at 4 a second, with no burst: the last leaves about 1.75 s after the
        // first.
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(1500),
            "{limit}: sent within {took:?}"
        );
        app.stop().await;
    }
}

/// A template whose data multiplies it (three nested `each`) stops at the render limits:
/// a PUT whose sample data renders past them is 422, a preview is 422 naming the limit,
/// and a send fails for good with it as the reason. Loops that write nothing stop at the
/// time limit. Before the limits, this template rendered 1.8 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_past_its_limits_is_refused_at_put_and_preview_and_fails_a_send() {
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let items: Vec<u32> = (0..450).collect();
    let data = json!({ "items": items });
    let exploding = "{{#each items}}{{#each ../items}}{{#each ../../items}}\
                     <p>{{this}} of {{@index}}, and a few words more</p>{{/each}}{{/each}}{{/each}}";
    let path = "/v1/templates/exploding";
    let template = |sample: Option<&Value>| {
        let mut body = json!({"subject": "Many", "html": exploding});
        if let Some(sample) = sample {
            body["sampleData"] = sample.clone();
        }
        body
    };
    let limit_named = |body: &Value, field: &str, limit: &str| {
        let detail = body["error"]["details"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["field"] == field))
            .unwrap_or_else(|| panic!("no detail for {field}: {body}"));
        let message = detail["message"].as_str().unwrap();
        assert!(message.contains(limit), "{message}");
    };

    let (status, body) = app
        .call(Method::PUT, path, Some(&template(Some(&data))))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    limit_named(&body, "sampleData", "email.render.max_bytes");

    let (status, body) = app.call(Method::PUT, path, Some(&template(None))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            &format!("{path}/preview"),
            Some(&json!({"data": data})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    limit_named(&body, "data", "render size limit of 1048576 bytes");

    let id = send(
        &app,
        json!({"to": ["ada@example.com"], "template": "exploding", "data": data}),
    )
    .await;
    let status = app.notification_when(&id, final_status).await;
    assert_eq!(status["status"], "failed", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("email.render.max_bytes"), "{status}");

    // Nothing written, a quarter of a billion iterations: the time limit stops it.
    let silent = "{{#each items}}{{#each ../items}}{{#each ../../items}}{{#each ../../../items}}\
                  {{/each}}{{/each}}{{/each}}{{/each}}";
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/templates/silent",
            Some(&json!({"subject": "None", "html": silent})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let started = std::time::Instant::now();
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/templates/silent/preview",
            Some(&json!({"data": data})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    limit_named(&body, "data", "email.render.max_time");
    eprintln!("the silent render stopped after {:?}", started.elapsed());
    app.stop().await;
}

/// A tenant cannot point Herald at its own machine, its network or a metadata service:
/// such a relay is 422 naming `host` (and the operator's setting), settings that got into
/// the store anyway are refused where Herald connects, and plain SMTP may carry a password
/// only to this machine. The operator's `providers.allow_private_addresses` lets a tenant
/// use a local relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_relay_must_be_public_unless_the_operator_allows_private_ones() {
    let Some(relay) = SmtpRelay::start() else {
        return;
    };
    let app = TestApp::spawn(BrokerKind::Embedded, Roles::everything(), &[]).await;
    let local = json!({"host": "127.0.0.1", "port": relay.port, "security": "plain"});
    for host in [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "10.0.0.5",
        "169.254.169.254",
    ] {
        let mut settings = local.clone();
        settings["host"] = json!(host);
        let (status, body) = app
            .call(Method::PUT, "/v1/providers/smtp", Some(&settings))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{host}: {body}");
        let detail = &body["error"]["details"][0];
        assert_eq!(detail["field"], "host", "{body}");
        assert!(
            detail["message"]
                .as_str()
                .unwrap()
                .contains("providers.allow_private_addresses"),
            "{body}"
        );
    }
    let (status, body) = app
        .call(
            Method::PUT,
            "/v1/providers/smtp",
            Some(&json!({"host": "smtp.example.com", "security": "plain",
                         "username": "acme", "password": "in-clear"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "security", "{body}");

    // Stored without the API's check (as before it existed, or a name re-pointed since):
    // refused where Herald connects, for good, and the relay hears nothing.
    let tenant = herald::domain::TenantId::parse("1").unwrap();
    app.herald
        .store
        .put_provider(&tenant, "smtp", &local.to_string())
        .await
        .unwrap();
    let id = send(
        &app,
        json!({"to": ["ada@example.com"], "template": "welcome", "data": {"name": "Ada"}}),
    )
    .await;
    let status = app.notification_when(&id, final_status).await;
    assert_eq!(status["status"], "failed", "{status}");
    let error = status["deliveries"][0]["lastError"].as_str().unwrap();
    assert!(error.contains("private"), "{error}");
    assert!(relay.received().is_empty());
    app.stop().await;

    let allowing = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::everything(),
        &[("providers.allow_private_addresses", "true")],
    )
    .await;
    let (status, body) = allowing
        .call(Method::PUT, "/v1/providers/smtp", Some(&local))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = send(
        &allowing,
        json!({"to": ["ada@example.com"], "template": "welcome", "data": {"name": "Ada"}}),
    )
    .await;
    let status = allowing.notification_when(&id, final_status).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(relay.wait_for(1).await.len(), 1);
    allowing.stop().await;
}
