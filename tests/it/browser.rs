//! A real browser, Debian's Chromium driven headless by playwright-core
//! (tests/seeds/browser.mjs), on a page of another origin than Herald's, with the
//! socket.io client served beside the page as the seeds' front ends load it: what the
//! seeds' browsers do, CORS included, since every long-polling request is cross-origin.

use crate::support::TestApp;
use crate::support::seeds::BrowserPage;
use crate::support::socket::token;
use herald::app::Roles;
use herald::config::BrokerKind;
use serde_json::{Value, json};

/// The contents of messages as the page saw them.
fn contents(messages: &Value) -> Vec<&str> {
    let messages = messages.as_array().expect("a list of messages");
    messages
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_allowed_origin_gets_live_messages_over_socket_io_and_exactly_what_it_missed()
{
    let Some(page) = BrowserPage::serve().await else {
        return;
    };
    let allowed = json!([page.origin]).to_string();
    let app = TestApp::spawn(
        BrokerKind::Embedded,
        Roles::everything(),
        &[("http.cors_origins", &allowed)],
    )
    .await;
    let config = json!({
        "base": app.address, "key": app.key, "token": token(&app, "web").await, "user": "web",
    });
    let (origin, refused_origin) = (page.origin.clone(), page.refused_origin.clone());
    let seen = page.run(config).await;

    assert!(
        seen["refused"]
            .as_str()
            .is_some_and(|r| r.starts_with("connect_error")),
        "a page from {refused_origin}, not allowed, cannot connect: {seen}"
    );
    assert_eq!(seen["first"]["content"], "before", "{seen}");
    assert_eq!(contents(&seen["missed"]), ["one", "two", "three"], "{seen}");
    assert_eq!(
        contents(&seen["seen"]),
        ["before", "one", "two", "three", "live"],
        "no duplicate, no gap: {seen}"
    );
    let cursors: Vec<i64> = seen["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cursor"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(cursors.is_sorted_by(|a, b| a < b), "{seen}");
    assert_eq!(
        seen["transports"],
        json!(["polling", "websocket"]),
        "{seen}"
    );
    let mut origins = vec![origin, refused_origin, app.address.clone()];
    origins.sort();
    assert_eq!(
        seen["origins"],
        json!(origins),
        "the page asked nothing of any other origin"
    );
    app.stop().await;
}
