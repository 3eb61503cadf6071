//! Cross-origin requests from browsers: the seeds' front ends (Socket.IO's long-polling,
//! `EventSource`, `fetch`) run on an origin of their own and call Herald's. Off unless
//! origins are configured (`http.cors_origins`): an API that takes bearer keys has no use
//! for a browser's cookies, so credentials are never allowed, and a page may only read the
//! headers a client needs (`Location`, `Retry-After`).

use axum::http::{HeaderName, HeaderValue, Method, header};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Which browser origins may call the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// None: no CORS headers at all, as before.
    #[default]
    None,
    /// Any origin (`["*"]`).
    Any,
    /// These origins, each `scheme://host[:port]`.
    List(Vec<HeaderValue>),
}

impl AllowedOrigins {
    /// Parses the configured list: `["*"]`, or origins such as `https://app.example.com`.
    pub fn parse(origins: &[String]) -> Result<Self, String> {
        if origins.is_empty() {
            return Ok(AllowedOrigins::None);
        }
        if origins.iter().any(|o| o == "*") {
            return if origins.len() == 1 {
                Ok(AllowedOrigins::Any)
            } else {
                Err("\"*\" allows every origin and must stand alone".into())
            };
        }
        origins
            .iter()
            .map(|origin| {
                let (scheme, rest) = origin
                    .split_once("://")
                    .ok_or_else(|| format!("'{origin}' is not an origin such as https://app.example.com"))?;
                let bare = matches!(scheme, "http" | "https")
                    && !rest.is_empty()
                    && !rest.contains(['/', '?', '#', ' ']);
                if !bare {
                    return Err(format!(
                        "'{origin}' is not an origin such as https://app.example.com (a scheme and a host, no path)"
                    ));
                }
                HeaderValue::from_str(origin).map_err(|_| format!("'{origin}' is not a valid header value"))
            })
            .collect::<Result<_, _>>()
            .map(AllowedOrigins::List)
    }

    /// The layer answering preflights and adding the headers, if any origin is allowed.
    pub fn layer(&self) -> Option<CorsLayer> {
        let allow = match self {
            AllowedOrigins::None => return None,
            AllowedOrigins::Any => AllowOrigin::any(),
            AllowedOrigins::List(origins) => AllowOrigin::list(origins.iter().cloned()),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                    HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([header::LOCATION, header::RETRY_AFTER])
                .max_age(Duration::from_secs(3600)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_as_written() {
        let parse = |list: &[&str]| {
            AllowedOrigins::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(parse(&[]), Ok(AllowedOrigins::None));
        assert_eq!(parse(&["*"]), Ok(AllowedOrigins::Any));
        assert!(parse(&["*", "https://a.example"]).is_err());
        assert!(parse(&["https://a.example/app"]).is_err());
        assert!(parse(&["a.example"]).is_err());
        assert_eq!(
            parse(&["http://localhost:3000"]),
            Ok(AllowedOrigins::List(vec![HeaderValue::from_static(
                "http://localhost:3000"
            )]))
        );
    }
}
