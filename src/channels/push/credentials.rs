//! Provider credentials: an APNs token-auth key, and an FCM service account. Each comes
//! from configuration or from the tenant (`PUT /v1/providers/apns`, `/fcm`); the private
//! keys are never answered back.
//!
//! Credentials as written ([`ApnsCredentials`], [`FcmCredentials`]) become ready to sign
//! ([`ApnsKey`], [`FcmServiceAccount`]) once, with every field checked and the private key
//! read: configured ones when the configuration is loaded, a tenant's when the first
//! client for them is made. Clients take only the ready form.

use super::ProviderUrl;
use super::jwt::SigningKey;
use crate::outbound::OutboundPolicy;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

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
        self.clone().ready().map(|_| ())
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
}

impl Credentials for ApnsCredentials {
    const PROVIDER: &'static str = "APNs";

    fn fingerprint(&self) -> String {
        fingerprint(&self.to_stored())
    }

    fn ready(self) -> Result<ApnsKey, CredentialError> {
        plain_token("keyId", &self.key_id)?;
        plain_token("teamId", &self.team_id)?;
        plain_token("topic", &self.topic)?;
        let signer = SigningKey::es256(self.private_key.expose_secret())
            .or_else(|e| error("privateKey", e))?;
        Ok(ReadyCredentials::new(self, signer))
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
    /// Checks every field, the key included.
    pub fn check(&self) -> Result<(), CredentialError> {
        self.clone().ready().map(|_| ())
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
}

impl Credentials for FcmCredentials {
    const PROVIDER: &'static str = "FCM";

    fn fingerprint(&self) -> String {
        fingerprint(&self.to_stored())
    }

    fn ready(self) -> Result<FcmServiceAccount, CredentialError> {
        plain_token("project_id", &self.project_id)?;
        if !self.client_email.contains('@') {
            return error("client_email", "must be the service account's address");
        }
        if let Some(uri) = &self.token_uri
            && let Err(problem) = ProviderUrl::parse(uri)
        {
            return error("token_uri", problem);
        }
        let signer = SigningKey::rs256(self.private_key.expose_secret())
            .or_else(|e| error("private_key", e))?;
        Ok(ReadyCredentials::new(self, signer))
    }
}

fn fingerprint(stored: &serde_json::Value) -> String {
    hex::encode(&Sha256::digest(stored.to_string().as_bytes())[..12])
}

/// Provider credentials as written: told apart by a fingerprint, and made ready to sign
/// once.
pub trait Credentials: Clone {
    /// The provider's name, as errors name it (`APNs`, `FCM`).
    const PROVIDER: &'static str;

    /// Tells these credentials from any others without holding the key.
    fn fingerprint(&self) -> String;

    /// Checks every field and reads the key; the first bad field.
    fn ready(self) -> Result<ReadyCredentials<Self>, CredentialError>;
}

/// Credentials ready to sign: every field checked, the private key read.
#[derive(Clone)]
pub struct ReadyCredentials<C> {
    credentials: C,
    signer: Arc<SigningKey>,
    fingerprint: String,
}

/// APNs credentials ready to sign provider tokens.
pub type ApnsKey = ReadyCredentials<ApnsCredentials>;

/// A service account ready to sign token requests.
pub type FcmServiceAccount = ReadyCredentials<FcmCredentials>;

impl<C: Credentials> ReadyCredentials<C> {
    fn new(credentials: C, signer: SigningKey) -> Self {
        ReadyCredentials {
            fingerprint: credentials.fingerprint(),
            signer: Arc::new(signer),
            credentials,
        }
    }

    /// The credentials as written.
    pub fn credentials(&self) -> &C {
        &self.credentials
    }

    /// The key that signs.
    pub(super) fn signer(&self) -> &SigningKey {
        &self.signer
    }

    /// Tells these credentials from any others without holding the key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for ReadyCredentials<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials keep their key secret; the signer is left out.
        f.debug_struct("ReadyCredentials")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl FcmServiceAccount {
    /// Reads a service account JSON file, checks it and reads its key.
    pub fn read_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let credentials: FcmCredentials = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a service account: {e}", path.display()))?;
        credentials
            .ready()
            .map_err(|e| format!("{}: {} {}", path.display(), e.field, e.message))
    }
}
