//! The HTTP edge in process: requests handed to `Herald::router()` with `oneshot`, no
//! socket and no server task, so that each answer's status, headers and body are checked
//! exactly, and requests a client library would not send (a body streamed without a
//! length) are easy to make. Herald runs on the embedded broker in a directory of its own.

use crate::support;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use herald::app::Herald;
use herald::config::BrokerKind;
use serde_json::{Value, json};
use tempfile::TempDir;
use testkit::seeds::email_event;
use tower::ServiceExt;

/// The body limit of these tests: small, so that a body over it is cheap to make.
const BODY_LIMIT: usize = 4096;

/// A started Herald (no server, no workers) and an API key of tenant "1".
struct Edge {
    herald: Herald,
    key: String,
    _dir: TempDir,
}

impl Edge {
    async fn start() -> Edge {
        Edge::start_with(&[]).await
    }

    /// Starts with `settings` (dotted keys) over the tests' own.
    async fn start_with(settings: &[(&str, &str)]) -> Edge {
        let dir = TempDir::new().expect("a temporary directory");
        let limit = BODY_LIMIT.to_string();
        let mut overrides = vec![("http.body_limit_bytes", limit.as_str())];
        overrides.extend_from_slice(settings);
        let settings = support::settings(
            BrokerKind::Embedded,
            dir.path(),
            &support::unique_prefix(),
            &overrides,
        );
        let herald = Herald::start(settings).await.expect("Herald starts");
        let key = support::tenant_key(&herald, "1").await;
        Edge {
            herald,
            key,
            _dir: dir,
        }
    }

    /// A request to `path` with the tenant's key.
    fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
    }

    /// A POST of `body` to `path` with the tenant's key, declared as `content_type`.
    fn post(&self, path: &str, content_type: &str, body: Body) -> Request<Body> {
        self.request(Method::POST, path)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .unwrap()
    }

    /// A POST of `body` as JSON to `path`, with the tenant's key.
    fn post_json(&self, path: &str, body: &Value) -> Request<Body> {
        self.post(path, "application/json", Body::from(body.to_string()))
    }

    /// Hands `request` to a fresh router; answers the response's head and body.
    async fn respond(
        &self,
        request: Request<Body>,
    ) -> (axum::http::response::Parts, axum::body::Bytes) {
        let response = self
            .herald
            .router()
            .oneshot(request)
            .await
            .expect("the router answers every request");
        let (parts, body) = response.into_parts();
        (parts, axum::body::to_bytes(body, usize::MAX).await.unwrap())
    }

    /// Hands `request` to a fresh router; its answer's body must be JSON.
    async fn call(&self, request: Request<Body>) -> Answer {
        let (parts, bytes) = self.respond(request).await;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{} answered a body that is not JSON ({e}): {bytes:?}",
                parts.status
            )
        });
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// What the router answered, its body read as JSON.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts `status` and the contract's error shape, nothing more, with `code`;
    /// answers the error's `details`.
    fn assert_error(&self, status: StatusCode, code: &str) -> &Vec<Value> {
        let body = &self.body;
        assert_eq!(self.status, status, "{body}");
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(keys(body), ["error"], "{body}");
        let error = &body["error"];
        assert_eq!(keys(error), ["code", "details", "message"], "{body}");
        assert_eq!(error["code"], code, "{body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "a message for humans: {body}"
        );
        error["details"].as_array().expect("details is a list")
    }

    /// Asserts a refusal without details: `status`, the error shape with `code`, and a
    /// message that says `says`.
    fn assert_refused(&self, status: StatusCode, code: &str, says: &str) {
        assert!(self.assert_error(status, code).is_empty(), "{}", self.body);
        assert!(self.message().contains(says), "{}", self.body);
    }

    /// The error's message.
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

/// The keys of a JSON object, sorted.
fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap_or_else(|| panic!("an object: {object}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn a_send_without_a_valid_key_is_401_in_the_error_shape() {
    let edge = Edge::start().await;
    let email = email_event().to_string();
    let sent_with = |authorization: Option<&str>| {
        let mut request = Request::post("/v1/notifications/email")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request.body(Body::from(email.clone())).unwrap()
    };
    let says = "a valid API key is required";
    let answer = edge.call(sent_with(None)).await;
    answer.assert_refused(StatusCode::UNAUTHORIZED, "unauthorized", says);
    let forged = "Bearer hk_000000000000_not-a-key";
    let answer = edge.call(sent_with(Some(forged))).await;
    answer.assert_refused(StatusCode::UNAUTHORIZED, "unauthorized", says);
    assert!(
        !answer.message().contains("not-a-key"),
        "the key is not echoed"
    );
}

#[tokio::test]
async fn a_body_not_sent_as_json_is_415_in_the_error_shape() {
    let edge = Edge::start().await;
    let body = Body::from(email_event().to_string());
    let answer = edge
        .call(edge.post("/v1/notifications/email", "text/plain", body))
        .await;
    let (status, code) = (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    answer.assert_refused(status, code, "application/json");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_whether_its_length_is_declared_or_not() {
    let edge = Edge::start().await;
    let (status, code) = (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let limit = BODY_LIMIT.to_string();
    let mut event = email_event();
    event["data"]["name"] = json!("x".repeat(BODY_LIMIT));
    let answer = edge
        .call(edge.post_json("/v1/notifications/email", &event))
        .await;
    answer.assert_refused(status, code, &limit);

    // Streamed in chunks, with no Content-Length to refuse it by: the limit still holds
    // while the body is read.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = event
        .to_string()
        .into_bytes()
        .chunks(512)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let stream = Body::from_stream(futures_util::stream::iter(chunks));
    let streamed = edge.post("/v1/notifications/email", "application/json", stream);
    assert!(!streamed.headers().contains_key(header::CONTENT_LENGTH));
    edge.call(streamed)
        .await
        .assert_refused(status, code, &limit);
}

#[tokio::test]
async fn a_bad_send_is_422_naming_each_field_and_what_is_wrong_with_it() {
    let edge = Edge::start().await;
    let event = json!({"to": ["ada@example.com", "not an address"], "data": {"name": "Ada"}});
    let answer = edge
        .call(edge.post_json("/v1/notifications/email", &event))
        .await;
    let details = answer.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    for detail in details {
        assert_eq!(keys(detail), ["field", "message"], "{detail}");
    }
    let named: Vec<(&str, &str)> = details
        .iter()
        .map(|d| (d["field"].as_str().unwrap(), d["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        [
            ("to", "item 1 'not an address' is not an email address"),
            ("template", "is required")
        ],
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn an_unknown_route_is_404_in_the_error_shape() {
    let edge = Edge::start().await;
    let request = edge
        .request(Method::GET, "/v1/nothing/here")
        .body(Body::empty())
        .unwrap();
    let answer = edge.call(request).await;
    answer.assert_refused(StatusCode::NOT_FOUND, "not_found", "/v1/nothing/here");
}

#[tokio::test]
async fn an_accepted_send_is_202_with_a_location_that_answers_at_once() {
    let edge = Edge::start().await;
    let answer = edge
        .call(edge.post_json("/v1/notifications/email", &email_event()))
        .await;
    let body = &answer.body;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(keys(body), ["id", "status"], "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().unwrap();
    let location = answer.headers[header::LOCATION].to_str().unwrap();
    assert_eq!(location, format!("/v1/notifications/{id}"));

    // The acceptance is recorded before the 202: the Location answers without waiting.
    let follow = edge
        .request(Method::GET, location)
        .body(Body::empty())
        .unwrap();
    let notification = edge.call(follow).await;
    let record = &notification.body;
    assert_eq!(notification.status, StatusCode::OK, "{record}");
    assert_eq!(record["id"], id);
    assert_eq!(record["kind"], "email");
    assert_eq!(record["status"], "queued");
}

/// An origin the CORS tests allow, as a browser names a page's.
const APP_ORIGIN: &str = "https://app.example";

/// The settings that allow [`APP_ORIGIN`].
const ALLOW_APP: (&str, &str) = ("http.cors_origins", "[\"https://app.example\"]");

/// A browser's preflight from `origin`: may a page send `method` to `path` with
/// `headers`? Browsers send no key with it.
fn preflight(origin: &str, path: &str, method: &str, headers: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(path)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .body(Body::empty())
        .unwrap()
}

/// The preflights a page sends before it calls Herald: a send, Socket.IO's long polling,
/// and an `EventSource` that resumes; each `(path, method, headers it asks for)`.
const PREFLIGHTS: [(&str, &str, &str); 3] = [
    (
        "/v1/notifications/email",
        "POST",
        "authorization,content-type,idempotency-key",
    ),
    (
        "/socket.io/?EIO=4&transport=polling",
        "POST",
        "content-type",
    ),
    ("/v1/realtime/sse?token=t", "GET", "last-event-id"),
];

/// What Herald answers a page on `origin`: the [`PREFLIGHTS`], then Socket.IO's
/// handshake; each answer's headers, named by what was asked.
async fn answers_to_a_page_on(edge: &Edge, origin: &str) -> Vec<(String, HeaderMap)> {
    let mut answers = Vec::new();
    for (path, method, asks) in PREFLIGHTS {
        let (answer, _) = edge.respond(preflight(origin, path, method, asks)).await;
        answers.push((format!("{method} {path}"), answer.headers));
    }
    let (handshake, _) = edge.respond(socket_io_handshake(origin)).await;
    answers.push(("Socket.IO's handshake".to_owned(), handshake.headers));
    answers
}

/// What browsers call first on Socket.IO: the long-polling handshake, from `origin`.
fn socket_io_handshake(origin: &str) -> Request<Body> {
    Request::get("/socket.io/?EIO=4&transport=polling")
        .header(header::ORIGIN, origin)
        .body(Body::empty())
        .unwrap()
}

/// The header `name`, lower-cased, split at commas (empty when absent).
fn listed(headers: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

/// The names of the CORS headers (`access-control-*`) in `headers`.
fn cors_headers(headers: &HeaderMap) -> Vec<&str> {
    headers
        .keys()
        .map(header::HeaderName::as_str)
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn preflights_from_an_allowed_origin_are_answered_for_the_api_socket_io_and_sse() {
    let edge = Edge::start_with(&[ALLOW_APP]).await;
    for (path, method, asks) in PREFLIGHTS {
        let (answer, _) = edge
            .respond(preflight(APP_ORIGIN, path, method, asks))
            .await;
        let headers = &answer.headers;
        assert!(answer.status.is_success(), "{path}: {}", answer.status);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            APP_ORIGIN,
            "{path}"
        );
        let methods = listed(headers, header::ACCESS_CONTROL_ALLOW_METHODS);
        assert!(
            methods.contains(&method.to_ascii_lowercase()),
            "{path}: {methods:?}"
        );
        let allowed = listed(headers, header::ACCESS_CONTROL_ALLOW_HEADERS);
        for asked in asks.split(',') {
            assert!(
                allowed.iter().any(|a| a == asked),
                "{path}: {asked} in {allowed:?}"
            );
        }
        assert!(
            !headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "{path}: a page's cookies are never allowed"
        );
    }

    // The requests themselves carry the origin back; a send lets the page read Location.
    let (handshake, body) = edge.respond(socket_io_handshake(APP_ORIGIN)).await;
    assert_eq!(handshake.status, StatusCode::OK, "{body:?}");
    assert!(
        body.starts_with(b"0{"),
        "an Engine.IO open packet: {body:?}"
    );
    let headers = &handshake.headers;
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP_ORIGIN);
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    let send = edge
        .request(Method::POST, "/v1/notifications/email")
        .header(header::ORIGIN, APP_ORIGIN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(email_event().to_string()))
        .unwrap();
    let answer = edge.call(send).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let headers = &answer.headers;
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP_ORIGIN);
    let exposed = listed(headers, header::ACCESS_CONTROL_EXPOSE_HEADERS);
    assert!(exposed.iter().any(|h| h == "location"), "{exposed:?}");
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
}

#[tokio::test]
async fn an_origin_not_allowed_is_not_let_in() {
    let edge = Edge::start_with(&[ALLOW_APP]).await;
    for (asked, headers) in answers_to_a_page_on(&edge, "https://elsewhere.example").await {
        assert!(
            !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{asked}: {headers:?}"
        );
        assert!(
            !headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "{asked}: {headers:?}"
        );
    }
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let edge = Edge::start().await;
    for (asked, headers) in answers_to_a_page_on(&edge, APP_ORIGIN).await {
        assert_eq!(cors_headers(&headers), Vec::<&str>::new(), "{asked}");
    }
}
