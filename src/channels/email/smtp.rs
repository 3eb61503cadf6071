//! SMTP relays: their settings (global in configuration, or a tenant's own through
//! `PUT /v1/providers/smtp`), and one pooled lettre transport per relay.

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Reads a PEM CA certificate file, checking that it parses.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Certificate::from_pem(&pem)
        .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
    Ok(pem)
}

/// One pooled transport per relay, made on first use.
pub struct Relays {
    pool_size: u32,
    timeout: Duration,
    /// A CA trusted besides the system's, as PEM.
    extra_ca: Option<Vec<u8>>,
    transports: Mutex<HashMap<RelayIdentity, Arc<AsyncSmtpTransport<Tokio1Executor>>>>,
}

impl Relays {
    /// Transports keeping up to `pool_size` connections each, with `timeout` per exchange,
    /// trusting `extra_ca` (PEM) besides the system's CAs.
    pub fn new(pool_size: u32, timeout: Duration, extra_ca: Option<Vec<u8>>) -> Self {
        Relays {
            pool_size,
            timeout,
            extra_ca,
            transports: Mutex::new(HashMap::new()),
        }
    }

    fn transport(
        &self,
        relay: &RelaySettings,
    ) -> Result<Arc<AsyncSmtpTransport<Tokio1Executor>>, String> {
        let identity = relay.identity();
        let mut transports = self.transports.lock().expect("never poisoned");
        if let Some(transport) = transports.get(&identity) {
            return Ok(transport.clone());
        }
        let tls = match relay.security {
            Security::Plain => Tls::None,
            Security::Starttls | Security::Tls => {
                let mut parameters = TlsParameters::builder(relay.host.clone());
                if let Some(pem) = &self.extra_ca {
                    let ca =
                        Certificate::from_pem(pem).map_err(|e| format!("the extra CA: {e}"))?;
                    parameters = parameters.add_root_certificate(ca);
                }
                let parameters = parameters
                    .build_rustls()
                    .map_err(|e| format!("TLS for {}: {e}", relay.host))?;
                if relay.security == Security::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host)
            .port(relay.port())
            .tls(tls)
            .timeout(Some(self.timeout))
            .pool_config(PoolConfig::new().max_size(self.pool_size));
        if let (Some(username), Some(password)) = (&relay.username, &relay.password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let transport = Arc::new(builder.build());
        transports.insert(identity, transport.clone());
        Ok(transport)
    }

    /// Sends `message` through `relay`.
    pub async fn send(&self, relay: &RelaySettings, message: Message) -> SendResult {
        let transport = match self.transport(relay) {
            Ok(transport) => transport,
            Err(e) => return SendResult::Permanent(e),
        };
        match transport.send(message).await {
            Ok(response) => SendResult::Accepted(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) if e.is_permanent() => SendResult::Permanent(e.to_string()),
            // Transient replies, and everything about the connection: the relay may be
            // back in a moment.
            Err(e) => SendResult::Transient(e.to_string()),
        }
    }
}
