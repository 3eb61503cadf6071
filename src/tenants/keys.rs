//! API keys: `hk_<id>_<secret>`. The id is public (it is how a key is found and listed);
//! the secret is 192 random bits. Only the SHA-256 of the whole key is stored: with that
//! much entropy a slow password hash would add latency to every request and no safety.

use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A key just made, shown once to whoever created it.
pub struct NewApiKey {
    /// The public id.
    pub id: String,
    /// The whole key, to hand to the client.
    pub key: secrecy::SecretString,
    /// What the store keeps.
    pub hash: [u8; 32],
}

impl fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system provides randomness");
    hex::encode(buf)
}

/// SHA-256 of a presented key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl NewApiKey {
    /// Makes a fresh key.
    pub fn generate() -> Self {
        let id = format!("hk_{}", random_hex(6));
        let key = format!("{id}_{}", random_hex(24));
        NewApiKey {
            hash: hash(&key),
            id,
            key: key.into(),
        }
    }
}

/// The id part of a presented key, if it has the shape of one.
pub fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix("hk_")?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 12
        && secret.len() == 48
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| &presented[..3 + id.len()])
}

/// Whether a presented key matches a stored hash, in constant time.
pub fn matches(presented: &str, stored_hash: &[u8]) -> bool {
    hash(presented).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_generated_key_parses_and_matches_only_its_own_hash() {
        let key = NewApiKey::generate();
        let presented = key.key.expose_secret();
        assert_eq!(key_id(presented), Some(key.id.as_str()));
        assert!(matches(presented, &key.hash));
        let other = NewApiKey::generate();
        assert!(!matches(other.key.expose_secret(), &key.hash));
        assert!(!format!("{key:?}").contains(presented));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        assert_eq!(key_id("hk_short_abc"), None);
        assert_eq!(key_id("Bearer something"), None);
        assert_eq!(key_id(""), None);
    }
}
