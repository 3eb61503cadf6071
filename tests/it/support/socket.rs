//! A real WebSocket client (tokio-tungstenite) on Herald's real-time endpoint: a token
//! from the API, the socket, and its JSON frames.

use super::TestApp;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A client's socket.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A token for `user`, from the API of `app`.
pub async fn token(app: &TestApp, user: &str) -> String {
    token_at(&app.address, &app.key, user).await
}

/// A token for `user`, from the instance at `address` under the API key `key`.
pub async fn token_at(address: &str, key: &str, user: &str) -> String {
    let response = super::http_client()
        .post(format!("{address}/v1/realtime/tokens"))
        .bearer_auth(key)
        .json(&json!({"userId": user, "ttlSeconds": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.unwrap();
    issued["token"].as_str().unwrap().to_owned()
}

/// Opens `user`'s socket on the instance at `address` with `token`, from `since`.
pub async fn open(address: &str, token: &str, since: Option<&str>) -> Socket {
    let mut url = format!(
        "{}/v1/realtime?token={token}",
        address.replacen("http", "ws", 1)
    );
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the socket opens");
    socket
}

/// The next JSON frame (pings are answered by the client itself), within 10 s.
pub async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket stays open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Frames up to and including `ready`.
pub async fn until_ready(socket: &mut Socket) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next(socket).await;
        if frame["type"] == "ready" {
            return frames;
        }
        frames.push(frame);
    }
}

/// Whether no frame arrives within `wait` (pings aside).
pub async fn quiet(socket: &mut Socket, wait: Duration) -> bool {
    loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Text(text)))) => {
                eprintln!("unexpected frame: {text}");
                return false;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return true,
        }
    }
}
