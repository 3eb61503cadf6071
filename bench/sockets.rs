//! What the real-time benches share: a user's socket on a running Herald, over Herald's
//! own WebSocket or over Socket.IO, and the chat messages it receives.
//!
//! The Socket.IO client is written here, on the tokio-tungstenite the WebSocket already
//! uses, rather than taken from a client crate: a bench that measures Herald should not
//! pull in (and partly measure) a client library, and what it needs of the wire is four
//! packet types, Socket.IO v5 packets inside Engine.IO v4 ones over one WebSocket:
//!
//! - `0{"sid":..,"pingInterval":..}`: Engine.IO's open, the server's first message;
//! - `40{"token":..}`: Socket.IO's CONNECT to namespace `/` with its auth, answered with
//!   `40{"sid":..}` (or `44{"message":..}`, the refusal);
//! - `2`: Engine.IO's ping, every heartbeat, answered with `3` (its pong), without which
//!   the server closes the connection;
//! - `42["message:new",data,{"cursor":..}]`: an EVENT, its name and its arguments; Herald
//!   emits `ready` (`42["ready",{"cursor":..}]`) once a session has replayed its log.
//!
//! Nothing else is needed by a client that connects over WebSocket at once: no long
//! polling and so no upgrade, and Herald asks for no acknowledgement and sends no binary.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::fmt;
use std::str::FromStr;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// A client's WebSocket, under either transport.
type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a client takes its events from Herald in real time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Herald's own WebSocket, `/v1/realtime?token=`: one JSON frame an event.
    WebSocket,
    /// Socket.IO v4 at `/socket.io/`, over its WebSocket transport.
    SocketIo,
}

/// A transport by the name the benches' variables use: `websocket` or `socketio`.
impl FromStr for Transport {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name.trim() {
            "websocket" => Ok(Transport::WebSocket),
            "socketio" => Ok(Transport::SocketIo),
            other => Err(format!("no transport '{other}' (websocket or socketio)")),
        }
    }
}

/// A transport as a report names it.
impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::WebSocket => "WebSocket",
            Transport::SocketIo => "Socket.IO",
        })
    }
}

/// A user's socket whose session is ready; read it with [`on_new_messages`].
pub struct Socket {
    transport: Transport,
    stream: WebSocket,
}

/// What a socket heard, as far as the benches care.
enum Heard {
    /// The session has replayed the user's log and waits for news (`ready`).
    Ready,
    /// A chat message (`message:new`), by its `messageId`.
    NewMessage(String),
    /// Anything else.
    Other,
}

impl Socket {
    /// The next thing heard, Socket.IO's pings answered on the way; `None` once the
    /// socket is closed.
    async fn next(&mut self) -> Option<Heard> {
        loop {
            let text = next_text(&mut self.stream).await?;
            // Herald's WebSocket frame `{"type", "data"}`, or Socket.IO's event name and
            // its first argument.
            let (name, data) = match self.transport {
                Transport::WebSocket => match serde_json::from_str(&text) {
                    Ok(Value::Object(mut frame)) => (
                        frame.remove("type").unwrap_or_default(),
                        frame.remove("data").unwrap_or_default(),
                    ),
                    _ => return Some(Heard::Other),
                },
                Transport::SocketIo => match socket_io::Packet::parse(&text) {
                    socket_io::Packet::Ping => {
                        self.stream.send(socket_io::pong()).await.ok()?;
                        continue;
                    }
                    socket_io::Packet::Event(args) => {
                        let mut args = args.into_iter();
                        (
                            args.next().unwrap_or_default(),
                            args.next().unwrap_or_default(),
                        )
                    }
                    _ => return Some(Heard::Other),
                },
            };
            return Some(match (name.as_str(), data["messageId"].as_str()) {
                (Some("ready"), _) => Heard::Ready,
                (Some("message:new"), Some(id)) => Heard::NewMessage(id.to_owned()),
                _ => Heard::Other,
            });
        }
    }
}

/// Opens `user`'s socket over `transport` on the Herald at `base` (`http://127.0.0.1:PORT`)
/// with a realtime token issued under the API key `key`, and answers it once its session
/// is ready: a session starts by reading the user's log, and a bench that sent messages
/// while thousands of sessions were still starting would measure their start with them.
pub async fn open(
    transport: Transport,
    client: &reqwest::Client,
    base: &str,
    key: &str,
    user: &str,
) -> Socket {
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
    let token = token["token"].as_str().unwrap();
    let base = base.replacen("http", "ws", 1);
    let stream = match transport {
        Transport::WebSocket => {
            let url = format!("{base}/v1/realtime?token={token}");
            tokio_tungstenite::connect_async(url).await.unwrap().0
        }
        Transport::SocketIo => socket_io::connect(&base, token).await,
    };
    let mut socket = Socket { transport, stream };
    loop {
        let heard = socket.next().await;
        match heard.expect("the socket closed before its session was ready") {
            Heard::Ready => return socket,
            Heard::NewMessage(_) | Heard::Other => continue,
        }
    }
}

/// Stops the bench, saying why, when the file limit (`ulimit -n`, which Herald inherits)
/// is too low for `connections` sockets: each process holds one descriptor per socket, its
/// end, and about as many again are kept for the HTTP requests in flight (one connection
/// each when Herald falls behind), the store and the broker.
pub fn check_file_limit(connections: usize) {
    let Some(limit) = testkit::measure::open_files_limit("self") else {
        return;
    };
    let needed = (2 * connections).max(connections + 1_000) as u64;
    assert!(
        limit >= needed,
        "{connections} connections need a file limit of {needed} or more, not {limit}: \
         run `ulimit -n {needed}` first"
    );
}

/// Reads `socket` in a task of its own, calling `arrived` with the `messageId` of each
/// `message:new` it receives (and answering Socket.IO's pings), until the socket closes
/// or the task is aborted.
pub fn on_new_messages(
    mut socket: Socket,
    mut arrived: impl FnMut(String) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(heard) = socket.next().await {
            if let Heard::NewMessage(id) = heard {
                arrived(id);
            }
        }
    })
}

/// The next text message of `stream`; `None` once it is closed or broken.
async fn next_text(stream: &mut WebSocket) -> Option<String> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// The little of Socket.IO v4 the benches speak (see the module's documentation).
mod socket_io {
    use super::{WebSocket, next_text};
    use futures_util::SinkExt;
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;

    /// A message from the server, as far as a bench cares.
    pub enum Packet {
        /// Engine.IO's open (`0`).
        Open,
        /// Engine.IO's ping (`2`).
        Ping,
        /// Socket.IO's CONNECT answered (`40`).
        Connected,
        /// Socket.IO's CONNECT refused (`44`), with the server's reason.
        Refused(String),
        /// A Socket.IO EVENT (`42`): its name, then its arguments.
        Event(Vec<Value>),
        /// Anything else.
        Other,
    }

    impl Packet {
        /// Reads a text message: Engine.IO's type is its first character, and a message
        /// (`4`) carries a Socket.IO packet whose type is the second. Namespace `/` is
        /// written as nothing, and an EVENT that asks for an acknowledgement puts the
        /// acknowledgement's id (digits) before its arguments.
        pub fn parse(text: &str) -> Packet {
            if let Some(event) = text.strip_prefix("42") {
                let args = event.trim_start_matches(|c: char| c.is_ascii_digit());
                return Packet::Event(serde_json::from_str(args).unwrap_or_default());
            }
            if text.starts_with("40") {
                return Packet::Connected;
            }
            if let Some(refusal) = text.strip_prefix("44") {
                return Packet::Refused(refusal.to_owned());
            }
            match text {
                "2" => Packet::Ping,
                _ if text.starts_with('0') => Packet::Open,
                _ => Packet::Other,
            }
        }
    }

    /// Engine.IO's pong, the answer to its ping.
    pub fn pong() -> Message {
        Message::text("3")
    }

    /// Connects to namespace `/` of the Socket.IO server at `base` (`ws://HOST`) with
    /// `token` as its auth, and answers the socket once the server has accepted it.
    pub async fn connect(base: &str, token: &str) -> WebSocket {
        let url = format!("{base}/socket.io/?EIO=4&transport=websocket");
        let mut stream = tokio_tungstenite::connect_async(url).await.unwrap().0;
        loop {
            let text = next_text(&mut stream)
                .await
                .expect("the Socket.IO connection closed before it was accepted");
            let answer = match Packet::parse(&text) {
                Packet::Open => Message::text(format!("40{}", json!({"token": token}))),
                Packet::Ping => pong(),
                Packet::Connected => return stream,
                Packet::Refused(why) => panic!("Herald refused the Socket.IO connection: {why}"),
                Packet::Event(_) | Packet::Other => continue,
            };
            stream.send(answer).await.unwrap();
        }
    }
}
