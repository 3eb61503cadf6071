//! Provider credentials: an APNs token-auth key, and an FCM service account. Each comes
//! from configuration or from the tenant (`PUT /v1/providers/apns`, `/fcm`); the private
//! keys are never answered back.

use super::jwt::SigningKey;
use crate::outbound::OutboundPolicy;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A bad credential field: which, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError {
    /// The field, as the API names it.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn error<T>(field: &'static str, message: impl Into<String>) -> Result<T, CredentialError> {
    Err(CredentialError {
        field,
        message: message.into(),
    })
}

/// Which APNs endpoint a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    /// Apps from the App Store and TestFlight.
    #[default]
    Production,
    /// Development builds.
    Sandbox,
}

/// An APNs token-authentication key (a `.p8` file) and the app it sends for.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApnsCredentials {
    /// The key's id, from Apple's developer account.
    #[serde(alias = "key_id")]
    pub key_id: String,
    /// The developer team's id.
    #[serde(alias = "team_id")]
    pub team_id: String,
    /// The app's bundle id: the `apns-topic` of every push.
    pub topic: String,
    /// The `.p8` file's contents (PKCS#8 PEM, P-256).
    #[serde(alias = "private_key")]
    pub private_key: SecretString,
    /// Production or sandbox.
    #[serde(default)]
    pub environment: ApnsEnvironment,
}

fn plain_token(field: &'static str, value: &str) -> Result<(), CredentialError> {
    if value.is_empty() || value.len() > 200 || value.contains(char::is_whitespace) {
        return error(field, "must be 1 to 200 characters without spaces");
    }
    Ok(())
}

impl ApnsCredentials {
    /// Checks every field, the key included.
    pub fn check(&self) -> Result<(), CredentialError> {
        plain_token("keyId", &self.key_id)?;
        plain_token("teamId", &self.team_id)?;
        plain_token("topic", &self.topic)?;
        self.signing_key().map(|_| ())
    }

    /// The key that signs provider tokens.
    pub fn signing_key(&self) -> Result<SigningKey, CredentialError> {
        SigningKey::es256(self.private_key.expose_secret()).or_else(|e| error("privateKey", e))
    }

    /// As stored, key included.
    pub fn to_stored(&self) -> serde_json::Value {
        serde_json::json!({
            "keyId": self.key_id, "teamId": self.team_id, "topic": self.topic,
            "privateKey": self.private_key.expose_secret(), "environment": self.environment,
        })
    }

    /// As answered: the key redacted.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "keyId": self.key_id, "teamId": self.team_id, "topic": self.topic,
            "privateKey": "[redacted]", "environment": self.environment,
        })
    }

    /// Tells these credentials from any others without holding the key.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.to_stored())
    }
}

/// The hosts of Google's OAuth token endpoint, as service account files name them.
const GOOGLE_TOKEN_HOSTS: [&str; 3] = [
    "oauth2.googleapis.com",
    "www.googleapis.com",
    "accounts.google.com",
];

/// A Google service account allowed to send through FCM, as Google's JSON file has it.
#[derive(Debug, Clone, Deserialize)]
pub struct FcmCredentials {
    /// The Firebase project.
    #[serde(alias = "projectId")]
    pub project_id: String,
    /// The service account's address: the issuer of its token requests.
    #[serde(alias = "clientEmail")]
    pub client_email: String,
    /// Its RSA key (PKCS#8 PEM).
    #[serde(alias = "privateKey")]
    pub private_key: SecretString,
    /// Google's token endpoint, as the file names it.
    #[serde(default, alias = "tokenUri")]
    pub token_uri: Option<String>,
}

impl FcmCredentials {
    /// Reads and checks a service account JSON file.
    pub fn read_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let credentials: FcmCredentials = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a service account: {e}", path.display()))?;
        credentials
            .check()
            .map_err(|e| format!("{}: {} {}", path.display(), e.field, e.message))?;
        Ok(credentials)
    }

    /// Checks every field, the key included.
    pub fn check(&self) -> Result<(), CredentialError> {
        plain_token("project_id", &self.project_id)?;
        if !self.client_email.contains('@') {
            return error("client_email", "must be the service account's address");
        }
        if let Some(uri) = &self.token_uri
            && !(uri.starts_with("https://") || uri.starts_with("http://"))
        {
            return error("token_uri", "must be an http(s) URL");
        }
        self.signing_key().map(|_| ())
    }

    /// Checks, for a tenant's service account, that its `token_uri` is Google's: Herald
    /// sends it a signed grant, which anywhere else would hand the account's access to
    /// whoever answers. Any URI passes where `outbound` allows private addresses (a local
    /// stand-in in development).
    pub fn check_token_uri(&self, outbound: &OutboundPolicy) -> Result<(), CredentialError> {
        let Some(uri) = &self.token_uri else {
            return Ok(());
        };
        if outbound.allow_private_addresses {
            return Ok(());
        }
        let google = reqwest::Url::parse(uri).is_ok_and(|url| {
            url.scheme() == "https"
                && url.port().is_none()
                && url
                    .host_str()
                    .is_some_and(|host| GOOGLE_TOKEN_HOSTS.contains(&host))
        });
        if google {
            Ok(())
        } else {
            error(
                "token_uri",
                "must be Google's token endpoint over https, such as \
                 https://oauth2.googleapis.com/token",
            )
        }
    }

    /// The key that signs token requests.
    pub fn signing_key(&self) -> Result<SigningKey, CredentialError> {
        SigningKey::rs256(self.private_key.expose_secret()).or_else(|e| error("private_key", e))
    }

    /// As stored, key included.
    pub fn to_stored(&self) -> serde_json::Value {
        serde_json::json!({
            "project_id": self.project_id, "client_email": self.client_email,
            "private_key": self.private_key.expose_secret(), "token_uri": self.token_uri,
        })
    }

    /// As answered: the key redacted.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "project_id": self.project_id, "client_email": self.client_email,
            "private_key": "[redacted]", "token_uri": self.token_uri,
        })
    }

    /// Tells these credentials from any others without holding the key.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.to_stored())
    }
}

fn fingerprint(stored: &serde_json::Value) -> String {
    hex::encode(&Sha256::digest(stored.to_string().as_bytes())[..12])
}
