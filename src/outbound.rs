//! Where Herald may connect on a tenant's behalf. A tenant names its own SMTP relay and
//! FCM token endpoint; without a check, those would let any tenant make Herald connect to
//! its own loopback, the private network it runs in, or a cloud metadata service, and send
//! credentials there. Addresses a tenant supplies must be public, unless the operator
//! allows private ones (`providers.allow_private_addresses`, for local relays in
//! development). Operator-configured endpoints are trusted as they are.
//!
//! A host name is checked where it is resolved, just before connecting, so that a name
//! re-pointed after it was checked (DNS rebinding) gains nothing; the API also checks it
//! when the settings are written, so that a tenant learns at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long resolving a tenant's host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a provider's answer read, and quoted in a delivery's `lastError`.
pub const ANSWER_READ_LIMIT: usize = 64 * 1024;
const QUOTE_LIMIT: usize = 300;

/// Whether outbound connections on a tenant's behalf may reach private addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboundPolicy {
    /// `providers.allow_private_addresses`.
    pub allow_private_addresses: bool,
}

/// Why a tenant's endpoint may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It is, or resolves to, an address that is not public.
    #[error(
        "{host} is {address}, a private, loopback or link-local address; Herald connects only \
         to public addresses for tenants (an operator allows private ones with \
         providers.allow_private_addresses)"
    )]
    Private {
        /// The host as given.
        host: String,
        /// The address it is or resolved to.
        address: IpAddr,
    },
    /// It could not be resolved.
    #[error("{host} does not resolve: {reason}")]
    Unresolved {
        /// The host as given.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
}

impl OutboundPolicy {
    /// Refuses `host` if it is an address, or `localhost`, that may not be reached. Names
    /// are left to [`OutboundPolicy::resolve`].
    pub fn check_literal(&self, host: &str) -> Result<(), Refusal> {
        if self.allow_private_addresses {
            return Ok(());
        }
        let bare = unbracketed(host);
        let address = if let Ok(address) = bare.parse::<IpAddr>() {
            address
        } else if is_localhost(bare) {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            return Ok(());
        };
        if is_public(address) {
            Ok(())
        } else {
            Err(Refusal::Private {
                host: host.to_owned(),
                address,
            })
        }
    }

    /// Resolves `host` to the addresses that may be connected to: all of them, or a
    /// refusal if any is not public (a name that also points inward is not trusted).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        self.check_literal(host)?;
        let bare = unbracketed(host);
        let unresolved = |reason: String| Refusal::Unresolved {
            host: host.to_owned(),
            reason,
        };
        let addresses: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| unresolved(format!("no answer within {RESOLVE_TIMEOUT:?}")))?
                .map_err(|e| unresolved(e.to_string()))?
                .collect();
        if addresses.is_empty() {
            return Err(unresolved("no addresses".into()));
        }
        if !self.allow_private_addresses
            && let Some(private) = addresses.iter().find(|a| !is_public(a.ip()))
        {
            return Err(Refusal::Private {
                host: host.to_owned(),
                address: private.ip(),
            });
        }
        Ok(addresses)
    }

    /// Checks a host when a tenant writes it: its literal form, then what it resolves to
    /// now. A name that does not resolve yet is let through: it is checked again, and
    /// refused if it must be, every time Herald connects.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<(), Refusal> {
        match self.resolve(host, port).await {
            Ok(_) | Err(Refusal::Unresolved { .. }) => Ok(()),
            Err(refusal) => Err(refusal),
        }
    }
}

/// Whether `host` is this machine: `localhost` or a loopback address. Only there may a
/// password cross a connection in clear.
pub fn is_this_machine(host: &str) -> bool {
    let bare = unbracketed(host);
    is_localhost(bare) || bare.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// `host` without the brackets of an IPv6 literal (`[::1]`).
fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `localhost` and its subdomains, which resolve to loopback by definition (RFC 6761).
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Whether `address` is on the public internet: not loopback, private (RFC 1918, unique
/// local), link-local (cloud metadata services live at 169.254.169.254), shared (CGNAT),
/// unspecified, broadcast, multicast or reserved.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && v4.octets()[2] == 0)
        || a >= 240)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let first = v6.segments()[0];
    !(v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && v6.segments()[1] == 0x0db8
        || v6.segments()[..6] == [0, 0, 0, 0, 0, 0])
}

/// `text` cut to a length fit to quote in a delivery's `lastError`: a provider, or
/// whatever a tenant pointed Herald at, may answer anything.
pub fn quote(text: &str) -> String {
    if text.len() <= QUOTE_LIMIT {
        return text.to_owned();
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// A provider's answer as JSON, read up to [`ANSWER_READ_LIMIT`]: a larger or unreadable
/// one is null, so that no answer can make Herald hold more than that.
pub async fn json_answer(mut response: reqwest::Response) -> serde_json::Value {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= ANSWER_READ_LIMIT => {
                body.extend_from_slice(&chunk)
            }
            Ok(None) => break,
            Ok(Some(_)) | Err(_) => return serde_json::Value::Null,
        }
    }
    serde_json::from_slice(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "142.250.74.106", "2607:f8b0:4004:c1b::5f"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_tenants_host_is_refused_when_it_is_or_resolves_inward_unless_allowed() {
        let strict = OutboundPolicy::default();
        for host in [
            "127.0.0.1",
            "[::1]",
            "localhost",
            "relay.localhost",
            "169.254.169.254",
        ] {
            assert!(
                matches!(
                    strict.check_host(host, 25).await,
                    Err(Refusal::Private { .. })
                ),
                "{host}"
            );
        }
        assert!(strict.check_host("8.8.8.8", 25).await.is_ok());
        assert!(
            strict.check_host("nosuchhost.invalid", 25).await.is_ok(),
            "checked again when connecting"
        );
        assert!(matches!(
            strict.resolve("nosuchhost.invalid", 25).await,
            Err(Refusal::Unresolved { .. })
        ));
        let allowing = OutboundPolicy {
            allow_private_addresses: true,
        };
        assert_eq!(
            allowing.resolve("127.0.0.1", 25).await.unwrap(),
            ["127.0.0.1:25".parse().unwrap()]
        );
    }

    #[test]
    fn a_long_answer_is_quoted_in_part() {
        let long = "é".repeat(1000);
        let quoted = quote(&long);
        assert!(quoted.len() < 320, "{}", quoted.len());
        assert!(quoted.ends_with("(2000 bytes)"));
        assert_eq!(quote("short"), "short");
    }
}
