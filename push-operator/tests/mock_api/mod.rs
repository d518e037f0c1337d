//! The mocked API server of the reconcile, optional-object and leader tests
//! (the tower-test pattern of kube-rs/controller-rs): a `Client` whose every
//! request the test receives, asserts and answers in order. Each test binary
//! uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle, SendResponse};

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A client talking to the returned handle.
pub fn client() -> (Client, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// The next request, or a test failure after 5 s (a missing call fails the
/// test instead of hanging it).
pub async fn next(
    handle: &mut ApiHandle,
    what: &str,
) -> (Request<Body>, SendResponse<Response<Body>>) {
    next_within(handle, what, Duration::from_secs(5)).await
}

/// [`next`] with its own limit (tests on tokio's paused clock, where time
/// jumps ahead whenever every task waits, need a longer one).
pub async fn next_within(
    handle: &mut ApiHandle,
    what: &str,
    limit: Duration,
) -> (Request<Body>, SendResponse<Response<Body>>) {
    tokio::time::timeout(limit, handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("client dropped before {what}"))
}

pub async fn body_json(req: Request<Body>) -> Value {
    let bytes = req
        .into_body()
        .collect()
        .await
        .expect("request body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("JSON request body")
}

pub fn respond(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    let bytes = serde_json::to_vec(body).expect("serialize response");
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(bytes))
            .expect("response"),
    );
}

/// The API server's 404 Status.
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404})
}

/// Asserts a server-side apply of `path` by the operator's field manager,
/// forced, as an apply patch.
pub fn assert_apply(req: &Request<Body>, path: &str) {
    assert_eq!(req.method(), http::Method::PATCH, "{path}");
    assert_eq!(req.uri().path(), path);
    let query = req.uri().query().unwrap_or_default();
    assert!(
        query.contains("fieldManager=push-operator"),
        "{path}: {query}"
    );
    assert!(query.contains("force=true"), "{path}: {query}");
    assert_eq!(
        req.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("application/apply-patch+yaml"),
        "{path}"
    );
}

/// After the scripted requests, the client must make no further call.
pub async fn expect_no_more(mut handle: ApiHandle) {
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}
