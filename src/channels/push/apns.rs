//! APNs over HTTP/2 with token authentication.
//!
//! Herald's own small client on reqwest rather than the `a2` crate, which cannot be
//! pointed at another host (tests need a local stand-in). One client per credential keeps
//! one HTTP/2 connection to Apple and multiplexes every push over it; the provider token
//! (an ES256 JWT) is made once and renewed every 50 minutes, well within Apple's hour and
//! not more often than its 20-minute floor.

use super::credentials::{ApnsEnvironment, ApnsKey};
use super::{ProviderUrl, PushResult, retry_after};
use crate::domain::{Priority, PushNotification};
use crate::outbound;
use serde_json::{Map, Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one provider token is used.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// A client for one set of APNs credentials.
pub struct ApnsClient {
    key: ApnsKey,
    url: String,
    http: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
}

impl ApnsClient {
    /// A client for `key`, sending to `production` or `sandbox` as its credentials say.
    pub fn new(
        key: ApnsKey,
        production: &ProviderUrl,
        sandbox: &ProviderUrl,
        http: reqwest::Client,
    ) -> Self {
        let url = match key.credentials().environment {
            ApnsEnvironment::Production => production,
            ApnsEnvironment::Sandbox => sandbox,
        };
        ApnsClient {
            url: url.as_str().trim_end_matches('/').to_owned(),
            key,
            http,
            token: Mutex::new(None),
        }
    }

    /// The current provider token, made anew when it is 50 minutes old.
    fn provider_token(&self) -> Result<String, String> {
        let mut token = self.token.lock().expect("never poisoned");
        if let Some((jwt, made)) = token.as_ref()
            && made.elapsed() < TOKEN_LIFETIME
        {
            return Ok(jwt.clone());
        }
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let credentials = self.key.credentials();
        let jwt = self.key.signer().sign(
            Some(&credentials.key_id),
            &json!({"iss": credentials.team_id, "iat": issued_at}),
        )?;
        *token = Some((jwt.clone(), Instant::now()));
        Ok(jwt)
    }

    /// Forgets the provider token, so that the next push makes a new one.
    fn renew_token(&self) {
        tracing::info!("APNs says the provider token expired; signing a new one");
        *self.token.lock().expect("never poisoned") = None;
    }

    /// Sends `push` to the device `token`; `apns_id` identifies it at Apple.
    pub async fn send(&self, token: &str, push: &PushNotification, apns_id: &str) -> PushResult {
        let jwt = match self.provider_token() {
            Ok(jwt) => jwt,
            Err(e) => {
                return PushResult::RefusedCredentials(format!("signing the APNs token: {e}"));
            }
        };
        let mut request = self
            .http
            .post(format!("{}/3/device/{token}", self.url))
            .bearer_auth(jwt)
            .header("apns-topic", &self.key.credentials().topic)
            .header("apns-push-type", "alert")
            .header("apns-id", apns_id)
            .header(
                "apns-priority",
                match push.priority {
                    Priority::High => "10",
                    Priority::Normal => "5",
                },
            )
            .json(&payload(push));
        if let Some(ttl) = push.ttl_seconds {
            // 0 asks Apple to try once and not store the push.
            let expiration = match ttl {
                0 => 0,
                ttl => {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                        + u64::from(ttl)
                }
            };
            request = request.header("apns-expiration", expiration.to_string());
        }
        if let Some(collapse) = &push.collapse_key {
            request = request.header("apns-collapse-id", collapse);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return PushResult::Retry {
                    error: format!("APNs: {e}"),
                    after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let apns_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let reason = outbound::json_answer(response).await["reason"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        let said = outbound::quote(format!("APNs {status} {reason}").trim_end());
        match (status, reason.as_str()) {
            (200, _) => PushResult::Delivered(format!("APNs 200 apns-id {apns_id}")),
            (410, _) | (400, "BadDeviceToken") => PushResult::Unregistered(said),
            (403, "ExpiredProviderToken") => {
                self.renew_token();
                PushResult::Retry { error: said, after }
            }
            (403, _) => PushResult::RefusedCredentials(said),
            (429, _) | (500..=599, _) => PushResult::Retry { error: said, after },
            _ => PushResult::Failed(said),
        }
    }
}

/// The APNs payload: `aps` with the alert, badge and sound, and the custom data beside it.
fn payload(push: &PushNotification) -> Value {
    let mut aps = json!({"alert": {"title": push.title, "body": push.body}});
    if let Some(badge) = push.badge {
        aps["badge"] = json!(badge);
    }
    if let Some(sound) = &push.sound {
        aps["sound"] = json!(sound);
    }
    let mut payload: Map<String, Value> = push
        .data
        .iter()
        .filter(|(key, _)| key.as_str() != "aps")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    payload.insert("aps".into(), aps);
    Value::Object(payload)
}
