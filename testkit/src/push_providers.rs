//! Stand-ins for Apple's and Google's push services, as real servers:
//!
//! - APNs: HTTP/2 over TLS (ALPN `h2`, a certificate from a test CA that Herald trusts by
//!   configuration), `POST /3/device/{token}`, checking the provider token's ES256
//!   signature, `kid`, `iss` and `iat` as Apple does.
//! - FCM and Google's token endpoint: HTTP, `POST /token` (the JWT-bearer grant, checking
//!   the RS256 assertion's claims) and `POST /v1/projects/{id}/messages:send`.
//!
//! Both answer by the device token's prefix: `gone-` is unregistered, `invalid-` is a bad
//! token, `slow-` answers 429 with `Retry-After: 2` the first time; anything else is
//! accepted. Every request is recorded.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One request a stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The device token it was for.
    pub token: String,
    /// Its headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// Its JSON body.
    pub body: Value,
    /// The claims of its bearer JWT (APNs), if any.
    pub claims: Value,
    /// When it arrived.
    pub at: Instant,
    /// The status answered.
    pub status: u16,
}

/// Splits a JWT and checks its signature with `verify(signing_input, signature)`; answers
/// its header and claims.
fn check_jwt(jwt: &str, verify: impl Fn(&[u8], &[u8]) -> bool) -> Option<(Value, Value)> {
    let mut parts = jwt.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    if !verify(format!("{header}.{claims}").as_bytes(), &signature) {
        return None;
    }
    let decode = |part: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    Some((decode(header)?, decode(claims)?))
}

fn headers_of(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What both stand-ins share: the requests, and the tokens already slowed once.
#[derive(Default)]
struct Log {
    received: Mutex<Vec<Received>>,
    slowed: Mutex<HashSet<String>>,
}

impl Log {
    /// The status a token's prefix asks for: `None` means accepted.
    fn planned(&self, token: &str) -> Option<u16> {
        if token.starts_with("gone-") {
            Some(410)
        } else if token.starts_with("invalid-") {
            Some(400)
        } else if token.starts_with("slow-") && self.slowed.lock().unwrap().insert(token.into()) {
            Some(429)
        } else {
            None
        }
    }

    fn record(&self, received: Received) {
        self.received.lock().unwrap().push(received);
    }
}

/// The APNs stand-in.
pub struct ApnsStandIn {
    /// `https://localhost:PORT`.
    pub url: String,
    /// The CA file Herald must trust to reach it.
    pub ca_file: String,
    state: Arc<ApnsState>,
    _certificates: tempfile::TempDir,
}

struct ApnsState {
    log: Log,
    /// Whether headers, bodies and claims are kept (the bench keeps only what it counts).
    details: bool,
    accepted: AtomicUsize,
    /// The key ids and public points of the keys it accepts, and their team.
    keys: Mutex<HashMap<String, (Vec<u8>, String)>>,
    connections: AtomicUsize,
}

impl ApnsStandIn {
    /// Starts the stand-in, keeping every request whole.
    pub async fn start() -> ApnsStandIn {
        Self::start_keeping(true).await
    }

    /// Starts the stand-in; without `details` it keeps only each request's token, time
    /// and status.
    pub async fn start_keeping(details: bool) -> ApnsStandIn {
        let certificates = tempfile::TempDir::new().unwrap();
        let (ca_file, cert, key) = crate::keys::test_certificates(certificates.path());
        let state = Arc::new(ApnsState {
            log: Log::default(),
            details,
            accepted: AtomicUsize::new(0),
            keys: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/3/device/{token}", post(apns_push))
            .with_state(state.clone());
        let tls = {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let chain = CertificateDer::pem_file_iter(&cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&key).unwrap();
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counting = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counting.connections.fetch_add(1, Ordering::SeqCst);
                let (tls, app) = (tls.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    // APNs speaks HTTP/2 only.
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        ApnsStandIn {
            url: format!("https://localhost:{port}"),
            ca_file,
            state,
            _certificates: certificates,
        }
    }

    /// Accepts provider tokens signed by the key with this id and public point, for `team`.
    pub fn accept_key(&self, key_id: &str, public_point: Vec<u8>, team: &str) {
        self.state
            .keys
            .lock()
            .unwrap()
            .insert(key_id.to_owned(), (public_point, team.to_owned()));
    }

    /// Every push received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.received.lock().unwrap().clone()
    }

    /// How many pushes it accepted (200) so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// How many connections clients opened.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

async fn apns_push(
    State(state): State<Arc<ApnsState>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer ").or(v.strip_prefix("Bearer ")))
        .unwrap_or("");
    let keys = state.keys.lock().unwrap().clone();
    let checked = check_jwt(bearer, |input, signature| {
        keys.values().any(|(point, _)| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(input, signature)
            .is_ok()
        })
    });
    let trusted = checked.as_ref().is_some_and(|(header, claims)| {
        let kid = header["kid"].as_str().unwrap_or("");
        let iat = claims["iat"].as_u64().unwrap_or(0);
        header["alg"] == "ES256"
            && keys
                .get(kid)
                .is_some_and(|(_, team)| claims["iss"] == team.as_str())
            && iat <= now_secs() + 60
            && now_secs() < iat + 3600
    });
    let (status, reason) = if !trusted {
        (403, Some("InvalidProviderToken"))
    } else {
        match state.log.planned(&token) {
            Some(410) => (410, Some("Unregistered")),
            Some(400) => (400, Some("BadDeviceToken")),
            Some(429) => (429, Some("TooManyRequests")),
            _ => (200, None),
        }
    };
    if status == 200 {
        state.accepted.fetch_add(1, Ordering::SeqCst);
    }
    let details = state.details;
    state.log.record(Received {
        token,
        headers: if details {
            headers_of(&headers)
        } else {
            HashMap::new()
        },
        body: if details {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        } else {
            Value::Null
        },
        claims: match checked {
            Some((_, claims)) if details => claims,
            _ => Value::Null,
        },
        at,
        status,
    });
    let apns_id = headers
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut response = match reason {
        None => StatusCode::OK.into_response(),
        Some(reason) => (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"reason": reason, "timestamp": now_secs() * 1000})),
        )
            .into_response(),
    };
    response
        .headers_mut()
        .insert("apns-id", apns_id.parse().unwrap());
    if status == 429 {
        response
            .headers_mut()
            .insert("retry-after", "2".parse().unwrap());
    }
    response
}

/// The FCM and Google token endpoint stand-in.
pub struct FcmStandIn {
    /// `http://127.0.0.1:PORT`: the FCM API's base URL.
    pub url: String,
    state: Arc<FcmState>,
}

struct FcmState {
    log: Log,
    /// Public keys (PKCS#1 DER) of the service accounts it knows, by their address.
    accounts: Mutex<HashMap<String, Vec<u8>>>,
    token_url: String,
    /// Access tokens issued, and the grant requests' claims.
    issued: Mutex<Vec<String>>,
    grants: Mutex<Vec<Value>>,
}

impl FcmStandIn {
    /// Starts the stand-in.
    pub async fn start() -> FcmStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(FcmState {
            log: Log::default(),
            accounts: Mutex::new(HashMap::new()),
            token_url: format!("{url}/token"),
            issued: Mutex::new(Vec::new()),
            grants: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/token", post(grant))
            .route("/v1/projects/{project}/{action}", post(fcm_send))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FcmStandIn { url, state }
    }

    /// The token endpoint's URL.
    pub fn token_url(&self) -> String {
        self.state.token_url.clone()
    }

    /// Knows the service account `email` by its public key.
    pub fn accept_account(&self, email: &str, public_key: Vec<u8>) {
        self.state
            .accounts
            .lock()
            .unwrap()
            .insert(email.to_owned(), public_key);
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.received.lock().unwrap().clone()
    }

    /// The claims of every grant request.
    pub fn grants(&self) -> Vec<Value> {
        self.state.grants.lock().unwrap().clone()
    }
}

async fn grant(State(state): State<Arc<FcmState>>, body: String) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%3a", ":")))
        .collect();
    let refuse = || {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            ),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse();
    }
    let accounts = state.accounts.lock().unwrap().clone();
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let checked = check_jwt(&assertion, |input, signature| {
        accounts.values().any(|key| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                key,
            )
            .verify(input, signature)
            .is_ok()
        })
    });
    let Some((header, claims)) = checked else {
        return refuse();
    };
    let valid = header["alg"] == "RS256"
        && accounts.contains_key(claims["iss"].as_str().unwrap_or(""))
        && claims["aud"] == state.token_url.as_str()
        && claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        && claims["exp"].as_u64().unwrap_or(0) > now_secs();
    state.grants.lock().unwrap().push(claims);
    if !valid {
        return refuse();
    }
    let mut issued = state.issued.lock().unwrap();
    let token = format!("ya29.test-{}", issued.len() + 1);
    issued.push(token.clone());
    axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn fcm_error(status: u16, code: &str, message: &str, fcm_code: Option<&str>) -> Response {
    let mut details = Vec::new();
    if let Some(fcm_code) = fcm_code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": fcm_code,
        }));
    }
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"error": {"code": status, "message": message, "status": code, "details": details}})),
    )
        .into_response()
}

async fn fcm_send(
    State(state): State<Arc<FcmState>>,
    Path((project, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    if action != "messages:send" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = body["message"]["token"].as_str().unwrap_or("").to_owned();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let authorised = state.issued.lock().unwrap().iter().any(|t| t == bearer);
    let response = if !authorised {
        fcm_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        )
    } else {
        match state.log.planned(&token) {
            Some(410) => fcm_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            ),
            Some(400) => fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                Some("INVALID_ARGUMENT"),
            ),
            Some(429) => {
                let mut response = fcm_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded.",
                    Some("QUOTA_EXCEEDED"),
                );
                response
                    .headers_mut()
                    .insert("retry-after", "2".parse().unwrap());
                response
            }
            _ => {
                let n = state.log.received.lock().unwrap().len();
                axum::Json(json!({"name": format!("projects/{project}/messages/{n}")}))
                    .into_response()
            }
        }
    };
    state.log.record(Received {
        token,
        headers: headers_of(&headers),
        body,
        claims: Value::Null,
        at,
        status: response.status().as_u16(),
    });
    response
}
