//! FCM through the HTTP v1 API, authorised by OAuth2 access tokens that a service
//! account gets from Google's token endpoint with a signed JWT (the JWT-bearer grant).
//!
//! The grant is a dozen lines on reqwest and ring, so Herald does it itself rather than
//! through `gcp_auth`: both the messages endpoint and the token endpoint must be
//! configurable for tests. An access token is reused until five minutes before it
//! expires.

use super::credentials::FcmServiceAccount;
use super::{ProviderUrl, PushResult, retry_after};
use crate::domain::{Platform, Priority, PushNotification};
use crate::outbound;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The scope FCM sends need.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Google's token endpoint, when neither configuration nor the service account name one.
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// How long before its expiry an access token is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// A client for one service account.
pub struct FcmClient {
    account: FcmServiceAccount,
    messages_url: String,
    token_url: String,
    http: reqwest::Client,
    access: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// Why no access token could be had.
enum TokenError {
    /// Google refused the service account.
    Refused(String),
    /// Google could not be asked or did not answer well.
    Unavailable(String),
}

impl FcmClient {
    /// A client for `account` on the FCM API at `url`, getting tokens at `token_url`
    /// (else the service account's own `token_uri`, else Google's).
    pub fn new(
        account: FcmServiceAccount,
        url: &ProviderUrl,
        token_url: Option<&str>,
        http: reqwest::Client,
    ) -> Self {
        let credentials = account.credentials();
        let token_url = token_url
            .or(credentials.token_uri.as_deref())
            .unwrap_or(GOOGLE_TOKEN_URL)
            .to_owned();
        FcmClient {
            messages_url: format!(
                "{}/v1/projects/{}/messages:send",
                url.as_str().trim_end_matches('/'),
                credentials.project_id
            ),
            account,
            token_url,
            http,
            access: tokio::sync::Mutex::new(None),
        }
    }

    /// A current access token: the cached one, or a new one from the token endpoint.
    #[tracing::instrument(name = "fcm_access_token", skip_all, fields(account = %self.account.credentials().client_email))]
    async fn access_token(&self) -> Result<String, TokenError> {
        let mut access = self.access.lock().await;
        if let Some((token, expires)) = access.as_ref()
            && Instant::now() + RENEW_BEFORE < *expires
        {
            return Ok(token.clone());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = self
            .account
            .signer()
            .sign(
                None,
                &json!({
                    "iss": self.account.credentials().client_email, "scope": SCOPE,
                    "aud": self.token_url, "iat": now, "exp": now + 3600,
                }),
            )
            .map_err(TokenError::Refused)?;
        let response = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "Google's token endpoint did not answer");
                TokenError::Unavailable(format!("Google's token endpoint: {e}"))
            })?;
        let status = response.status();
        let body = outbound::json_answer(response).await;
        if status.is_client_error() {
            return Err(TokenError::Refused(format!(
                "Google refused the service account: {status} {}",
                outbound::quote(
                    body["error_description"]
                        .as_str()
                        .or(body["error"].as_str())
                        .unwrap_or("")
                )
            )));
        }
        let (Some(token), Some(expires_in)) =
            (body["access_token"].as_str(), body["expires_in"].as_u64())
        else {
            return Err(TokenError::Unavailable(format!(
                "Google's token endpoint answered {status} without a token"
            )));
        };
        tracing::debug!(expires_in, "new FCM access token");
        let expires = Instant::now() + Duration::from_secs(expires_in);
        *access = Some((token.to_owned(), expires));
        Ok(token.to_owned())
    }

    /// Sends `push` to the registration `token` of a device on `platform`.
    pub async fn send(&self, token: &str, push: &PushNotification) -> PushResult {
        let access = match self.access_token().await {
            Ok(access) => access,
            Err(TokenError::Refused(e)) => return PushResult::RefusedCredentials(e),
            Err(TokenError::Unavailable(e)) => {
                return PushResult::Retry {
                    error: e,
                    after: None,
                };
            }
        };
        let response = self
            .http
            .post(&self.messages_url)
            .bearer_auth(access)
            .json(&json!({"message": message(token, push)}))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return PushResult::Retry {
                    error: format!("FCM: {e}"),
                    after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let body = outbound::json_answer(response).await;
        if status == 200 {
            return PushResult::Delivered(format!(
                "FCM 200 {}",
                body["name"].as_str().unwrap_or("")
            ));
        }
        let error = &body["error"];
        let code = error["status"].as_str().unwrap_or("");
        let message = error["message"].as_str().unwrap_or("");
        let said = outbound::quote(format!("FCM {status} {code} {message}").trim_end());
        let fcm_codes: Vec<&str> = error["details"]
            .as_array()
            .map(|details| {
                details
                    .iter()
                    .filter_map(|d| d["errorCode"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let about_the_token = message.contains("registration token")
            || error["details"].as_array().is_some_and(|details| {
                details.iter().any(|d| {
                    d["fieldViolations"].as_array().is_some_and(|violations| {
                        violations.iter().any(|v| v["field"] == "message.token")
                    })
                })
            });
        match status {
            _ if fcm_codes.contains(&"UNREGISTERED") || code == "NOT_FOUND" => {
                PushResult::Unregistered(said)
            }
            400 if code == "INVALID_ARGUMENT" && about_the_token => PushResult::Unregistered(said),
            401 | 403 => {
                // A token Google just issued that FCM refuses means the account may not
                // send; an older one may have been revoked: get a new one and try again.
                *self.access.lock().await = None;
                if status == 403 || fcm_codes.contains(&"SENDER_ID_MISMATCH") {
                    PushResult::RefusedCredentials(said)
                } else {
                    PushResult::Retry { error: said, after }
                }
            }
            429 | 500..=599 => PushResult::Retry { error: said, after },
            _ => PushResult::Failed(said),
        }
    }
}

/// The FCM message: the notification, data as strings (as FCM requires), and the
/// Android, web push and APNs overrides the notification's options ask for.
fn message(token: &str, push: &PushNotification) -> Value {
    let data: Map<String, Value> = push
        .data
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(text))
        })
        .collect();
    let high = push.priority == Priority::High;
    let mut android = json!({"priority": if high { "HIGH" } else { "NORMAL" }});
    let mut webpush_headers = json!({"Urgency": if high { "high" } else { "normal" }});
    let mut apns_headers = json!({"apns-priority": if high { "10" } else { "5" }});
    if let Some(ttl) = push.ttl_seconds {
        android["ttl"] = json!(format!("{ttl}s"));
        webpush_headers["TTL"] = json!(ttl.to_string());
    }
    if let Some(collapse) = &push.collapse_key {
        android["collapse_key"] = json!(collapse);
        webpush_headers["Topic"] = json!(collapse);
        apns_headers["apns-collapse-id"] = json!(collapse);
    }
    if let Some(sound) = &push.sound {
        android["notification"] = json!({"sound": sound});
    }
    let mut aps = json!({});
    if let Some(badge) = push.badge {
        aps["badge"] = json!(badge);
    }
    if let Some(sound) = &push.sound {
        aps["sound"] = json!(sound);
    }
    let mut message = json!({
        "token": token,
        "notification": {"title": push.title, "body": push.body},
        "data": data,
        "apns": {"headers": apns_headers, "payload": {"aps": aps}},
    });
    match push.platform {
        Platform::Mobile => message["android"] = android,
        Platform::Web => {
            message["webpush"] = json!({
                "headers": webpush_headers,
                "notification": {"title": push.title, "body": push.body},
            });
        }
    }
    message
}
