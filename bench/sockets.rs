//! What the real-time benches share: a user's WebSocket on a running Herald, and the chat
//! messages it receives.

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A client's WebSocket.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `user`'s socket on the Herald at `base` (`http://127.0.0.1:PORT`) with a realtime
/// token issued under the API key `key`.
pub async fn open(client: &reqwest::Client, base: &str, key: &str, user: &str) -> Socket {
    let token: Value = client
        .post(format!("{base}/v1/realtime/tokens"))
        .bearer_auth(key)
        .json(&json!({"userId": user}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/v1/realtime?token={}",
        base.replacen("http", "ws", 1),
        token["token"].as_str().unwrap()
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Reads `socket` in a task of its own, calling `arrived` with the `messageId` of each
/// `message:new` it receives.
pub fn on_new_messages(socket: Socket, mut arrived: impl FnMut(String) + Send + 'static) {
    tokio::spawn(async move {
        let (_, mut read) = socket.split();
        while let Some(Ok(message)) = read.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let frame: Value = serde_json::from_str(&text).unwrap_or_default();
            if frame["type"] == "message:new" {
                arrived(frame["data"]["messageId"].as_str().unwrap_or("").to_owned());
            }
        }
    });
}
