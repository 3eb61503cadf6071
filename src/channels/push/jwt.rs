//! The two JSON Web Tokens push needs, signed with ring: ES256 for APNs provider tokens
//! (from the tenant's `.p8` key) and RS256 for Google's OAuth2 JWT-bearer grant (from the
//! service account's key). Both keys come as PKCS#8 PEM.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::Value;

/// The DER inside a PEM block (`-----BEGIN PRIVATE KEY-----`).
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    if body.is_empty() {
        return Err("is not a PEM key (-----BEGIN PRIVATE KEY-----)".into());
    }
    STANDARD
        .decode(body)
        .map_err(|e| format!("is not valid PEM: {e}"))
}

/// A key that signs JWTs.
pub enum SigningKey {
    /// ES256 (P-256), as APNs wants.
    Es256(EcdsaKeyPair),
    /// RS256, as Google wants.
    Rs256(RsaKeyPair),
}

impl SigningKey {
    /// An ES256 key from a PKCS#8 PEM (an APNs `.p8` file).
    pub fn es256(pem: &str) -> Result<Self, String> {
        let der = pem_to_der(pem)?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .map(SigningKey::Es256)
            .map_err(|e| format!("is not a PKCS#8 P-256 key: {e}"))
    }

    /// An RS256 key from a PKCS#8 PEM (a service account's `private_key`).
    pub fn rs256(pem: &str) -> Result<Self, String> {
        let der = pem_to_der(pem)?;
        RsaKeyPair::from_pkcs8(&der)
            .map(SigningKey::Rs256)
            .map_err(|e| format!("is not a PKCS#8 RSA key: {e}"))
    }

    /// A signed JWT with these `claims` and, for APNs, the key id `kid`.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> Result<String, String> {
        let alg = match self {
            SigningKey::Es256(_) => "ES256",
            SigningKey::Rs256(_) => "RS256",
        };
        let mut header = serde_json::json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = Value::String(kid.to_owned());
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match self {
            SigningKey::Es256(key) => key
                .sign(&rng, signing_input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| format!("signing: {e}"))?,
            SigningKey::Rs256(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &rng,
                    signing_input.as_bytes(),
                    &mut signature,
                )
                .map_err(|e| format!("signing: {e}"))?;
                signature
            }
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}
