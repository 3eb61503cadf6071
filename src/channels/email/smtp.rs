//! SMTP relays: their settings (global in configuration, or a tenant's own through
//! `PUT /v1/providers/smtp`), and a pool of open sessions per relay.
//!
//! lettre encodes the messages; the sessions are Herald's own ([`super::session`]),
//! because lettre's client has no PIPELINING, and because lettre's transport opens its
//! sockets without `TCP_NODELAY` and writes the end-of-data marker apart from the message:
//! Nagle's algorithm then holds the marker until the relay's delayed ACK, about 40 ms a
//! message.

use super::message::Email;
use super::relay_pool::{Connect, RelayPool};
use super::session::{Mail, Session, SessionError, Stream};
use crate::channels::tls::ExtraCa;
use crate::outbound::{OutboundPolicy, Refusal};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

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
    #[serde(default, deserialize_with = "crate::domain::parse::optional_port")]
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
        if self.security == Security::Plain
            && self.username.is_some()
            && !crate::outbound::is_this_machine(&self.host)
        {
            return error(
                "security",
                "plain would send the password in clear: it is only for a relay on this \
                 machine (localhost); use starttls or tls",
            );
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
    fn identity(&self, whose: Whose) -> RelayIdentity {
        RelayIdentity {
            whose,
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

/// Who named a relay: the operator's is trusted; a tenant's must be at a public address
/// (see [`crate::outbound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Whose {
    /// The configured relay.
    Operator,
    /// A tenant's own.
    Tenant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RelayIdentity {
    whose: Whose,
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

/// How Herald opens sessions with relays.
struct Connector {
    /// TLS for relays, trusting the configured extra CA besides the system's.
    tls: Arc<rustls::ClientConfig>,
    /// The name Herald gives in EHLO: this host's.
    hello: String,
    /// How long a relay may take to connect, and then to take each write or answer.
    timeout: Duration,
    /// Where tenants' relays may be.
    outbound: OutboundPolicy,
}

/// Opens sessions with one relay.
struct RelayConnector {
    relay: RelaySettings,
    whose: Whose,
    connector: Arc<Connector>,
}

impl Connect for RelayConnector {
    #[tracing::instrument(name = "smtp_connect", skip_all, fields(relay = %self.relay.address()))]
    async fn connect(&self) -> Result<Session, SessionError> {
        let timeout = self.connector.timeout;
        let connecting = self.connector.connect(&self.relay, self.whose);
        match tokio::time::timeout(timeout, connecting).await {
            Ok(connected) => connected,
            Err(_) => Err(SessionError::Connection(format!(
                "{} did not answer within {timeout:?}",
                self.relay.address()
            ))),
        }
    }
}

impl Connector {
    /// Wraps `stream` in TLS for `relay`, checking its certificate.
    async fn tls(
        &self,
        relay: &RelaySettings,
        stream: Box<dyn Stream>,
    ) -> Result<Box<dyn Stream>, SessionError> {
        let name = rustls::pki_types::ServerName::try_from(relay.host.clone())
            .map_err(|e| SessionError::Unsendable(format!("relay host: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| SessionError::Connection(format!("TLS with {}: {e}", relay.address())))?;
        Ok(Box::new(tls))
    }

    /// Opens a session: TCP without Nagle's delay, TLS first or by STARTTLS as the relay's
    /// security says, then the login if there is one.
    async fn connect(&self, relay: &RelaySettings, whose: Whose) -> Result<Session, SessionError> {
        let address = relay.address();
        let connected = match whose {
            Whose::Operator => TcpStream::connect((relay.host.as_str(), relay.port())).await,
            Whose::Tenant => {
                // Resolved and vetted here, then connected to exactly what was vetted.
                let addresses = match self.outbound.resolve(&relay.host, relay.port()).await {
                    Ok(addresses) => addresses,
                    Err(refusal @ Refusal::Private { .. }) => {
                        return Err(SessionError::Unsendable(refusal.to_string()));
                    }
                    Err(refusal) => return Err(SessionError::Connection(refusal.to_string())),
                };
                TcpStream::connect(&addresses[..]).await
            }
        };
        let tcp = connected
            .map_err(|e| SessionError::Connection(format!("connecting to {address}: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| SessionError::Connection(format!("setting TCP_NODELAY: {e}")))?;
        let stream: Box<dyn Stream> = match relay.security {
            Security::Tls => self.tls(relay, Box::new(tcp)).await?,
            Security::Starttls | Security::Plain => Box::new(tcp),
        };
        let mut session = Session::open(stream, &self.hello, self.timeout).await?;
        if relay.security == Security::Starttls {
            session = session.starttls(|plain| self.tls(relay, plain)).await?;
        }
        if let (Some(username), Some(password)) = (&relay.username, &relay.password) {
            session
                .authenticate(username, password.expose_secret())
                .await?;
        }
        Ok(session)
    }
}

/// A pool of SMTP sessions per relay, made on first use.
pub struct Relays {
    pool_size: NonZeroU32,
    connector: Arc<Connector>,
    pools: Mutex<HashMap<RelayIdentity, Arc<RelayPool<RelayConnector>>>>,
}

impl Relays {
    /// Pools of up to `pool_size` sessions each, with `timeout` per exchange, trusting
    /// `extra_ca` besides the system's CAs.
    /// Tenants' relays must be where `outbound` allows.
    pub fn new(
        pool_size: NonZeroU32,
        timeout: Duration,
        extra_ca: Option<&ExtraCa>,
        outbound: OutboundPolicy,
    ) -> Self {
        let tls = crate::channels::tls::client_config(extra_ca, &[]);
        Relays {
            pool_size,
            connector: Arc::new(Connector {
                tls,
                hello: lettre::transport::smtp::extension::ClientId::default().to_string(),
                timeout,
                outbound,
            }),
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pool(&self, relay: &RelaySettings, whose: Whose) -> Arc<RelayPool<RelayConnector>> {
        let mut pools = self.pools.lock().expect("never poisoned");
        pools
            .entry(relay.identity(whose))
            .or_insert_with(|| {
                let connector = RelayConnector {
                    relay: relay.clone(),
                    whose,
                    connector: self.connector.clone(),
                };
                RelayPool::new(connector, self.pool_size.get() as usize)
            })
            .clone()
    }

    /// Sends `email` through `relay`, over one of its pooled sessions.
    pub async fn send(&self, relay: &RelaySettings, whose: Whose, email: Email) -> SendResult {
        let mail = Mail {
            from: email.from(),
            to: email.to(),
            content: email.bytes,
        };
        match self.pool(relay, whose).send(mail).await {
            Ok(reply) => SendResult::Accepted(reply.to_string()),
            Err(e) => classify(e),
        }
    }
}

/// A 5xx or an unsendable message is for good; a 4xx, a lost connection or a TLS failure
/// may pass.
fn classify(e: SessionError) -> SendResult {
    match e {
        SessionError::Refused(reply) if reply.is_permanent() => {
            SendResult::Permanent(reply.to_string())
        }
        SessionError::Refused(reply) => SendResult::Transient(reply.to_string()),
        SessionError::Unsendable(why) => SendResult::Permanent(why),
        SessionError::Connection(why) => {
            SendResult::Transient(format!("the connection to the relay: {why}"))
        }
    }
}
