//! SMTP relays: their settings (global in configuration, or a tenant's own through
//! `PUT /v1/providers/smtp`), and a pool of lettre SMTP connections per relay.
//!
//! The pool is Herald's own rather than lettre's `AsyncSmtpTransport` because lettre opens
//! its sockets without `TCP_NODELAY` and writes the end-of-data marker apart from the
//! message: Nagle's algorithm then holds the marker until the relay's delayed ACK, about
//! 40 ms per message, which capped a pool of 32 connections at ~700 messages a second.
//! Herald opens the socket itself (with `TCP_NODELAY`, and TLS for port 465) and hands it
//! to lettre's `AsyncSmtpConnection`, which speaks SMTP, STARTTLS and AUTH.

use lettre::Message;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How the connection to a relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    Plain,
}

impl Security {
    fn default_port(self) -> u16 {
        match self {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::Plain => 25,
        }
    }
}

/// An SMTP relay to send through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// Its host name.
    pub host: String,
    /// Its port; by default the one of `security`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is secured.
    #[serde(default)]
    pub security: Security,
    /// The user to authenticate as, if the relay wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// That user's password.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The sender for emails that name none, as a mailbox.
    #[serde(default)]
    pub from: Option<String>,
}

/// A bad relay setting: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl RelaySettings {
    /// The port connected to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }

    /// Checks the settings that can be checked without connecting.
    pub fn check(&self) -> Result<(), RelayError> {
        let error = |field, message: &str| {
            Err(RelayError {
                field,
                message: message.to_owned(),
            })
        };
        if self.host.trim().is_empty() || self.host.contains(char::is_whitespace) {
            return error("host", "must be a host name or address");
        }
        if self.port == Some(0) {
            return error("port", "must be between 1 and 65535");
        }
        if self.username.is_some() != self.password.is_some() {
            return error("password", "username and password go together");
        }
        if let Some(from) = &self.from
            && from.parse::<lettre::message::Mailbox>().is_err()
        {
            return error(
                "from",
                "must be a mailbox such as 'Acme <no-reply@acme.com>'",
            );
        }
        Ok(())
    }

    /// The settings as stored, password included.
    pub fn to_stored(&self) -> serde_json::Value {
        serde_json::json!({
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "username": self.username,
            "password": self.password.as_ref().map(|p| p.expose_secret().to_owned()),
            "from": self.from,
        })
    }

    /// The settings as answered: the password only as whether there is one.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "host": self.host,
            "port": self.port(),
            "security": self.security,
            "username": self.username,
            "password": self.password.as_ref().map(|_| "[redacted]"),
            "from": self.from,
        })
    }

    /// What tells one relay (and its credentials) from another.
    fn identity(&self) -> RelayIdentity {
        RelayIdentity {
            host: self.host.clone(),
            port: self.port(),
            security: self.security,
            username: self.username.clone(),
            password: self.password.as_ref().map(|p| {
                use sha2::Digest;
                sha2::Sha256::digest(p.expose_secret().as_bytes()).to_vec()
            }),
        }
    }

    /// The relay's name in logs and rate limits: `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RelayIdentity {
    host: String,
    port: u16,
    security: Security,
    username: Option<String>,
    /// A hash, so that a changed password gets a new transport without keeping the
    /// password itself as a map key.
    password: Option<Vec<u8>>,
}

/// What a relay answered one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Accepted, with the relay's reply.
    Accepted(String),
    /// Refused for now (4xx, or no connection): try again later.
    Transient(String),
    /// Refused for good (5xx, or a message that cannot be sent).
    Permanent(String),
}

/// How long a connection may sit idle in the pool before it is closed rather than reused:
/// relays drop idle clients after a few minutes.
const IDLE_FOR: Duration = Duration::from_secs(30);

/// The open connections to one relay.
struct Pool {
    /// Bounds the connections open at once.
    permits: Semaphore,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

/// A pool of SMTP connections per relay, made on first use.
pub struct Relays {
    pool_size: u32,
    timeout: Duration,
    /// A CA trusted besides the system's, as PEM.
    extra_ca: Option<Vec<u8>>,
    /// TLS for implicit-TLS relays.
    tls: Arc<rustls::ClientConfig>,
    hello: ClientId,
    pools: Mutex<HashMap<RelayIdentity, Arc<Pool>>>,
}

/// A TLS stream lettre can drive (it asks streams for their peer address).
#[derive(Debug)]
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Why a connection could not be opened or used; every one of them may pass.
fn transient(context: &str, e: impl std::fmt::Display) -> String {
    format!("{context}: {e}")
}

impl Relays {
    /// Pools of up to `pool_size` connections each, with `timeout` per exchange, trusting
    /// `extra_ca` (PEM) besides the system's CAs.
    pub fn new(pool_size: u32, timeout: Duration, extra_ca: Option<Vec<u8>>) -> Self {
        let tls = crate::channels::tls::client_config(extra_ca.as_deref(), &[])
            .expect("the configuration check read the extra CA");
        Relays {
            pool_size,
            timeout,
            extra_ca,
            tls,
            hello: ClientId::default(),
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pool(&self, relay: &RelaySettings) -> Arc<Pool> {
        let mut pools = self.pools.lock().expect("never poisoned");
        pools
            .entry(relay.identity())
            .or_insert_with(|| {
                Arc::new(Pool {
                    permits: Semaphore::new(self.pool_size as usize),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Opens a connection: TCP without Nagle's delay, TLS first or by STARTTLS as the
    /// relay's security says, then the login if there is one.
    async fn connect(&self, relay: &RelaySettings) -> Result<AsyncSmtpConnection, SendResult> {
        let fail =
            |context: &str, e: &dyn std::fmt::Display| SendResult::Transient(transient(context, e));
        let address = relay.address();
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((relay.host.as_str(), relay.port())),
        )
        .await
        .map_err(|e| fail(&format!("connecting to {address}"), &e))?
        .map_err(|e| fail(&format!("connecting to {address}"), &e))?;
        tcp.set_nodelay(true)
            .map_err(|e| fail("setting TCP_NODELAY", &e))?;
        let stream: Box<dyn AsyncTokioStream> = match relay.security {
            Security::Tls => {
                let name = rustls::pki_types::ServerName::try_from(relay.host.clone())
                    .map_err(|e| SendResult::Permanent(format!("relay host: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(&format!("TLS with {address}"), &e))?;
                Box::new(TlsStream(tls))
            }
            Security::Starttls | Security::Plain => Box::new(tcp),
        };
        let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| classify(&e))?;
        if relay.security == Security::Starttls {
            let mut parameters = TlsParameters::builder(relay.host.clone());
            if let Some(pem) = &self.extra_ca {
                let ca = Certificate::from_pem(pem)
                    .map_err(|e| SendResult::Permanent(format!("the extra CA: {e}")))?;
                parameters = parameters.add_root_certificate(ca);
            }
            let parameters = parameters
                .build_rustls()
                .map_err(|e| SendResult::Permanent(format!("TLS for {address}: {e}")))?;
            connection
                .starttls(parameters, &self.hello)
                .await
                .map_err(|e| classify(&e))?;
        }
        if let (Some(username), Some(password)) = (&relay.username, &relay.password) {
            let credentials =
                Credentials::new(username.clone(), password.expose_secret().to_owned());
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(connection)
    }

    /// Sends `message` through `relay`, over a pooled connection when one is idle. A pooled
    /// connection that the relay closed in the meantime is replaced once.
    pub async fn send(&self, relay: &RelaySettings, message: Message) -> SendResult {
        let pool = self.pool(relay);
        let _permit = pool.permits.acquire().await.expect("never closed");
        let envelope: Envelope = message.envelope().clone();
        let bytes = message.formatted();
        for _ in 0..2 {
            let idle = {
                let mut idle = pool.idle.lock().expect("never poisoned");
                idle.retain(|(_, since)| since.elapsed() < IDLE_FOR);
                idle.pop()
            };
            let reused = idle.is_some();
            let mut connection = match idle {
                Some((connection, _)) => connection,
                None => match self.connect(relay).await {
                    Ok(connection) => connection,
                    Err(failure) => return failure,
                },
            };
            let sent = tokio::time::timeout(self.timeout, connection.send(&envelope, &bytes)).await;
            match sent {
                Ok(Ok(response)) => {
                    pool.idle
                        .lock()
                        .expect("never poisoned")
                        .push((connection, Instant::now()));
                    return SendResult::Accepted(format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    ));
                }
                // The relay closed an idle connection: try once on a new one.
                Ok(Err(e)) if reused && !e.is_permanent() && !e.is_transient() => continue,
                Ok(Err(e)) => return classify(&e),
                Err(_) => {
                    return SendResult::Transient(format!(
                        "the relay did not answer within {:?}",
                        self.timeout
                    ));
                }
            }
        }
        SendResult::Transient(format!("{} keeps closing connections", relay.address()))
    }
}

/// A 5xx is for good; a 4xx, a lost connection or a TLS failure may pass.
fn classify(e: &lettre::transport::smtp::Error) -> SendResult {
    if e.is_permanent() {
        SendResult::Permanent(e.to_string())
    } else {
        SendResult::Transient(e.to_string())
    }
}
