//! Real-time tokens: short-lived, signed (HMAC-SHA256) proofs that a tenant let a user open
//! a WebSocket. The key lives in the store, so that a token issued by one instance opens a
//! socket on any other.

use crate::domain::TenantId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Signs and checks tokens.
pub struct TokenKey(hmac::Key);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It is not a token Herald made, or it was changed.
    #[error("the token is not valid")]
    Forged,
    /// It was, until it expired.
    #[error("the token has expired")]
    Expired,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The tenant.
    t: String,
    /// The user.
    u: String,
    /// When it expires, in Unix seconds.
    e: i64,
}

impl TokenKey {
    /// A key from its bytes.
    pub fn new(bytes: &[u8]) -> Self {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A token for `user` of `tenant`, valid until `expires`.
    pub fn issue(&self, tenant: &TenantId, user: &str, expires: DateTime<Utc>) -> String {
        let claims = Claims {
            t: tenant.as_str().to_owned(),
            u: user.to_owned(),
            e: expires.timestamp(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signature = hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The tenant and user of a token that is genuine and current.
    pub fn check(&self, token: &str) -> Result<(TenantId, String), TokenError> {
        let (body, signature) = token.split_once('.').ok_or(TokenError::Forged)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Forged)?;
        hmac::verify(&self.0, body.as_bytes(), &signature).map_err(|_| TokenError::Forged)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Forged)?;
        let expires = Utc
            .timestamp_opt(claims.e, 0)
            .single()
            .ok_or(TokenError::Forged)?;
        if expires <= Utc::now() {
            return Err(TokenError::Expired);
        }
        let tenant = TenantId::parse(&claims.t).map_err(|_| TokenError::Forged)?;
        Ok((tenant, claims.u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_for_its_user_until_it_expires_and_cannot_be_forged() {
        let key = TokenKey::new(b"0123456789abcdef0123456789abcdef");
        let tenant = TenantId::parse("acme").unwrap();
        let token = key.issue(&tenant, "ada", Utc::now() + chrono::Duration::seconds(60));
        assert_eq!(key.check(&token), Ok((tenant.clone(), "ada".into())));
        let expired = key.issue(&tenant, "ada", Utc::now() - chrono::Duration::seconds(1));
        assert_eq!(key.check(&expired), Err(TokenError::Expired));
        let other = TokenKey::new(b"another key, another key, another");
        assert_eq!(other.check(&token), Err(TokenError::Forged));
        // A changed body with the old signature.
        let (body, signature) = token.split_once('.').unwrap();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap())
                .unwrap()
                .replace("ada", "eve"),
        );
        assert_eq!(
            key.check(&format!("{forged_claims}.{signature}")),
            Err(TokenError::Forged)
        );
        assert_eq!(key.check("nonsense"), Err(TokenError::Forged));
    }
}
