//! The one origin policy (`allowed_origins`): CORS on HTTP answers, the
//! WebSocket handshake check and the raw SSE path's CORS headers all come
//! from here. Non-browser clients send no `Origin` and are allowed.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The configured origins.
#[derive(Debug, Clone)]
pub(crate) struct Origins {
    /// `*` was configured: every origin.
    any: bool,
    list: Vec<String>,
}

impl Origins {
    pub(crate) fn new(allowed: &[String]) -> Origins {
        Origins {
            any: allowed.iter().any(|o| o == "*"),
            list: allowed.to_vec(),
        }
    }

    /// Whether every origin is allowed (`*`).
    pub(crate) fn any(&self) -> bool {
        self.any
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.list.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Whether a browser may open a WebSocket from this request's `Origin`.
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            None => true,
            Some(origin) => self.allows(origin),
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request, as the CORS
    /// layer sends it on the hyper path.
    pub(crate) fn allow_origin(&self, headers: &HeaderMap) -> Option<String> {
        if self.any {
            return Some("*".into());
        }
        let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
        self.allows(origin).then(|| origin.to_string())
    }

    /// The CORS layer of the router (preflights included).
    pub(crate) fn cors_layer(&self) -> CorsLayer {
        let allow = if self.any {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                self.list
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .max_age(Duration::from_secs(3600))
    }
}
