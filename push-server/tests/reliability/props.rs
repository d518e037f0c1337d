//! Property-based tests of every client-facing HTTP parser, against a real
//! in-process server over real sockets (a raw HTTP/1.1 client that sends the
//! exact bytes generated).
//!
//! The property everywhere: a syntactically valid HTTP request gets a 2xx or
//! a 4xx/503 with the JSON error shape — never another 5xx, never a panic
//! (the server keeps answering `/healthz`), never a hang (each request is
//! bounded by [`WAIT`]). Where the right answer is known, the test checks
//! it against an oracle written independently of the server code.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::common::*;

/// Cases per property: `RELIABILITY_CASES` overrides (longer local runs).
pub fn cases(default: u32) -> u32 {
    std::env::var("RELIABILITY_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

/// Runs `property` for `cases` inputs against one server started with
/// `args`, then checks the server still answers.
///
/// Runs on a thread with a large stack: proptest's nested strategies
/// recurse deeply in debug builds (the server's own threads are untouched).
pub fn check<S, F, Fut>(
    name: &str,
    cases: u32,
    args: &[&str],
    strategy: impl FnOnce() -> S + Send + 'static,
    property: F,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(SocketAddr, S::Value) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    let name = name.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let runner = std::thread::Builder::new()
        .name(name.clone())
        .stack_size(64 << 20)
        .spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            check_here(&name, cases, &args, strategy(), property)
        })
        .expect("proptest thread");
    if let Err(panic) = runner.join() {
        std::panic::resume_unwind(panic);
    }
}

fn check_here<S, F, Fut>(name: &str, cases: u32, args: &[&str], strategy: S, property: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(SocketAddr, S::Value) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let rt = runtime();
    let server = rt.block_on(start(args));
    let addr = server.addr;
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..PropConfig::default()
    });
    let result = runner.run(&strategy, |input| {
        rt.block_on(property(addr, input))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let health = rt.block_on(raw_http(addr, &request("GET", "/healthz", &[], b"")));
    assert_eq!(
        health.map(|r| r.status),
        Ok(200),
        "{name}: server still healthy"
    );
    drop(server);
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);
/// A channel name used by one case only.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// The channel-name oracle of docs/protocol.md.
pub fn valid_channel(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
}

/// The message-id oracle of docs/protocol.md: `<ms>-<seq>`, two u64 in decimal.
pub fn valid_id(s: &str) -> bool {
    let Some((a, b)) = s.split_once('-') else {
        return false;
    };
    let num = |p: &str| {
        !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u64>().is_ok()
    };
    num(a) && num(b)
}

/// Nesting of arrays and objects (the server accepts at most 64).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Any JSON value, nested a few levels.
pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".*".prop_map(Value::String),
        "[\"\\\\\n\r\t\u{0}-\u{1f}\u{2028}\u{2029}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Strings that look like channel names, or almost, or not at all.
pub fn arb_channel() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.:@-]{1,128}",
        "[A-Za-z0-9_.:@-]{120,140}",
        "[A-Za-z0-9_.:@ /*,?#%&=+-]{0,20}",
        ".{0,20}",
        Just(String::new()),
        Just("..".to_string()),
        Just("user:42".to_string()),
    ]
}

/// Strings that look like message ids, or almost.
pub fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}-{b}")),
        "[0-9]{0,22}-[0-9]{0,22}",
        "[0-9+ -]{0,10}",
        "[0-9a-f,-]{0,30}",
        ".{0,12}",
        Just("18446744073709551616-0".to_string()),
        Just("0-18446744073709551615".to_string()),
    ]
}

/// Content types a publisher might send.
fn arb_content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(b"application/json".to_vec())),
        Just(Some(b"application/json; charset=utf-8".to_vec())),
        Just(Some(b"APPLICATION/JSON".to_vec())),
        Just(Some(b"application/vnd.push+json".to_vec())),
        Just(Some(b"application/json;;;=".to_vec())),
        Just(Some(b"text/plain".to_vec())),
        Just(Some(b"application/octet-stream".to_vec())),
        Just(Some(b"multipart/form-data; boundary=x".to_vec())),
        // Any legal header value, obs-text bytes included.
        prop::collection::vec(prop_oneof![0x21u8..0x7f, 0x80u8..=0xff, Just(b' ')], 1..40)
            .prop_map(|mut v| {
                v[0] = v[0].max(0x21);
                Some(v)
            }),
    ]
}

/// Whether the server must read the body as JSON (docs/protocol.md).
fn is_json_type(ct: Option<&[u8]>) -> bool {
    let Some(ct) = ct.and_then(|c| std::str::from_utf8(c).ok()) else {
        return false;
    };
    if !ct.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t') {
        return false;
    }
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

const LIMIT: usize = 1024;

fn arb_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        arb_json().prop_map(|v| serde_json::to_vec_pretty(&v).unwrap()),
        ".{0,200}".prop_map(String::into_bytes),
        // Deep nesting, balanced or not.
        (
            1usize..600,
            prop::bool::ANY,
            prop::sample::select(vec!["[", "{\"a\":", "[{\"b\":"])
        )
            .prop_map(|(depth, balanced, open)| {
                let mut s = open.repeat(depth);
                s.push('1');
                if balanced {
                    let close = if open == "[" {
                        "]"
                    } else if open == "{\"a\":" {
                        "}"
                    } else {
                        "}]"
                    };
                    s.push_str(&close.repeat(depth));
                }
                s.into_bytes()
            }),
        // Around the size limit.
        (LIMIT - 4..LIMIT + 8).prop_map(|n| {
            let mut v = vec![b'a'; n];
            v[0] = b'"';
            v[n - 1] = b'"';
            v
        }),
    ]
}

/// Reads back the single message of `channel` through the history API.
async fn read_back(addr: SocketAddr, channel: &str) -> Result<Value, String> {
    let r = raw_http(
        addr,
        &request(
            "GET",
            &format!("/api/v1/channels/{channel}/messages"),
            &[],
            b"",
        ),
    )
    .await?;
    if r.status != 200 {
        return Err(format!("history: {r:?}"));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
        format!(
            "history is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&r.body)
        )
    })?;
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    if msgs.len() != 1 {
        return Err(format!("want one message, history is {v}"));
    }
    Ok(msgs[0]["data"].clone())
}

#[test]
fn publish_bodies_and_content_types() {
    let limit = LIMIT.to_string();
    check(
        "publish body",
        cases(256),
        &["--max-message-bytes", &limit],
        || (arb_body(), arb_content_type()),
        |addr, (body, ct)| async move {
            let channel = unique("pb");
            let mut headers: Vec<(&str, &[u8])> = Vec::new();
            if let Some(ct) = &ct {
                headers.push(("Content-Type", ct));
            }
            let path = format!("/api/v1/channels/{channel}/messages");
            let r = raw_http(addr, &request("POST", &path, &headers, &body)).await?;
            r.check_answer()?;
            let json = is_json_type(ct.as_deref());
            if body.len() > LIMIT {
                return match r.error_code() {
                    Ok(c) if r.status == 413 && c == "message_too_large" => Ok(()),
                    _ => Err(format!("{} bytes: want 413, got {r:?}", body.len())),
                };
            }
            if json {
                let parsed = serde_json::from_slice::<Value>(&body);
                let too_deep = parsed.as_ref().is_ok_and(|v| depth(v) > 64);
                match (&parsed, r.status) {
                    (Ok(_), 400) if too_deep && r.error_code()? == "invalid_json" => Ok(()),
                    (Ok(v), 200) if !too_deep => {
                        let got = read_back(addr, &channel).await?;
                        if &got != v {
                            return Err(format!("data {got} != published {v}"));
                        }
                        Ok(())
                    }
                    (Err(_), 400) if r.error_code()? == "invalid_json" => Ok(()),
                    _ => Err(format!(
                        "JSON body {:?} (parses: {}): {r:?}",
                        String::from_utf8_lossy(&body),
                        parsed.is_ok()
                    )),
                }
            } else {
                match (std::str::from_utf8(&body), r.status) {
                    (Ok(text), 200) => {
                        let got = read_back(addr, &channel).await?;
                        if got != Value::String(text.to_string()) {
                            return Err(format!("data {got} != published text {text:?}"));
                        }
                        Ok(())
                    }
                    (Err(_), 400) if r.error_code()? == "invalid_body" => Ok(()),
                    _ => Err(format!("text body: {r:?}")),
                }
            }
        },
    );
}

#[test]
fn batch_bodies() {
    let body = || {
        let item = (arb_channel(), arb_json())
            .prop_map(|(c, d)| serde_json::json!({"channel": c, "data": d}));
        prop_oneof![
            prop::collection::vec(item, 0..5).prop_map(|items| {
                serde_json::json!({ "messages": items })
                    .to_string()
                    .into_bytes()
            }),
            arb_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..200),
        ]
    };
    check(
        "batch body",
        cases(128),
        &["--max-message-bytes", "1024"],
        body,
        |addr, body| async move {
            let r = raw_http(
                addr,
                &request(
                    "POST",
                    "/api/v1/publish",
                    &[("Content-Type", b"application/json")],
                    &body,
                ),
            )
            .await?;
            r.check_answer()?;
            // The oracle: a well-shaped batch whose channels are all valid
            // and data small enough is published whole; anything else not.
            // serde also reads a struct from an array of its fields, so
            // `[[["news",1]]]` is the same batch as the documented shape:
            // harmless, and accepted here too.
            let v = serde_json::from_slice::<Value>(&body)
                .ok()
                .map(|v| match v {
                    Value::Array(a) if a.len() == 1 => json!({ "messages": a[0] }),
                    v => v,
                });
            let items: Option<Vec<Value>> = v
                .as_ref()
                .and_then(|v| v.as_object())
                .filter(|o| o.len() == 1)
                .and_then(|o| o.get("messages"))
                .and_then(|m| m.as_array())
                .map(|items| {
                    items
                        .iter()
                        .map(|i| match i {
                            Value::Array(a) if a.len() == 2 => {
                                json!({"channel": a[0], "data": a[1]})
                            }
                            i => i.clone(),
                        })
                        .collect()
                });
            let ok = items.as_ref().is_some_and(|items| {
                items.iter().all(|i| {
                    i.as_object().is_some_and(|o| o.len() == 2)
                        && i["channel"].as_str().is_some_and(valid_channel)
                        && i["data"].to_string().len() <= 1024
                        && depth(&i["data"]) <= 64
                })
            });
            match (ok, r.status) {
                (true, 200) => {
                    let n = r.json()["results"].as_array().map_or(0, Vec::len);
                    if n != items.as_ref().map_or(0, Vec::len) {
                        return Err(format!("results: {r:?}"));
                    }
                    Ok(())
                }
                (false, 400 | 413) => Ok(()),
                _ => Err(format!(
                    "batch {:?} (valid: {ok}): {r:?}",
                    String::from_utf8_lossy(&body)
                )),
            }
        },
    );
}

#[test]
fn channel_names_in_paths_and_lists() {
    check(
        "channel names",
        cases(256),
        &[],
        || (arb_channel(), 0..3usize),
        |addr, (name, endpoint)| async move {
            let enc = pct(name.as_bytes());
            let valid = valid_channel(&name);
            let r = match endpoint {
                0 => {
                    let path = format!("/api/v1/channels/{enc}/messages");
                    raw_http(addr, &request("POST", &path, &[], b"x")).await?
                }
                1 => {
                    let path = format!("/api/v1/channels/{enc}/presence");
                    raw_http(addr, &request("GET", &path, &[], b"")).await?
                }
                _ => {
                    let path = format!("/sse?channels={enc}");
                    raw_http(addr, &request("GET", &path, &[], b"")).await?
                }
            };
            r.check_answer()?;
            let ok = match (endpoint, valid, r.status) {
                (0 | 1, true, 200) => r.json()["channel"] == name.as_str(),
                (2, true, 200) => r.body.starts_with(b"retry: "),
                // An empty path segment matches no route.
                (0 | 1, false, 404) => name.is_empty(),
                (_, false, 400) => r.error_code()? == "invalid_channel",
                // Commas split the SSE list: every part must be valid.
                (2, false, 200) => name.split(',').filter(|p| !p.is_empty()).all(valid_channel),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "channel {name:?} (valid: {valid}) on endpoint {endpoint}: {r:?}"
                ));
            }
            Ok(())
        },
    );
}

#[test]
fn history_since_and_limit() {
    let args = ["--history-size", "50"];
    check(
        "history query",
        cases(256),
        &args,
        || {
            (
                prop::option::of(arb_id()),
                prop::option::of(prop_oneof![
                    (0usize..20_000).prop_map(|n| n.to_string()),
                    "[0-9+-]{0,25}",
                    ".{0,6}",
                ]),
                "[a-z=&%0-9+]{0,20}",
            )
        },
        |addr, (since, limit, junk)| async move {
            // Some history, so that pages are not all empty.
            let seed = request("POST", "/api/v1/channels/h/messages", &[], b"x");
            raw_http(addr, &seed).await?.check_answer()?;
            let mut q = format!("?{junk}");
            if let Some(s) = &since {
                q.push_str(&format!("&since={}", pct(s.as_bytes())));
            }
            if let Some(l) = &limit {
                q.push_str(&format!("&limit={}", pct(l.as_bytes())));
            }
            let r = raw_http(
                addr,
                &request("GET", &format!("/api/v1/channels/h/messages{q}"), &[], b""),
            )
            .await?;
            r.check_answer()?;
            // Later duplicates of a key win in the query map; ours come last.
            let since_ok = since.as_deref().is_none_or(|s| s.is_empty() || valid_id(s))
                || (since.is_none() && junk.contains("since="));
            let limit_ok = limit
                .as_deref()
                .is_none_or(|l| l.parse::<usize>().is_ok_and(|n| n <= 10_000));
            let junk_keys = junk.contains("since=") || junk.contains("limit=");
            match (since_ok && limit_ok, r.status) {
                (true, 200) => Ok(()),
                (false, 400) => {
                    let code = r.error_code()?;
                    if ["invalid_since", "invalid_limit"].contains(&code.as_str()) {
                        Ok(())
                    } else {
                        Err(format!("code {code}"))
                    }
                }
                (_, 200 | 400) if junk_keys => Ok(()),
                _ => Err(format!("since {since:?} limit {limit:?}: {r:?}")),
            }
        },
    );
}

#[test]
fn raw_query_strings_on_every_endpoint() {
    let paths = || {
        prop::sample::select(vec![
            "/ws",
            "/sse",
            "/api/v1/channels/q/messages",
            "/api/v1/channels/q/presence",
            "/healthz",
            "/readyz",
            "/metrics",
            "/nope",
        ])
    };
    // Any bytes legal in a request target, '%' escapes valid or not.
    let query = || {
        prop::collection::vec(
            prop_oneof![
                4 => 0x21u8..0x7f,
                1 => Just(b'%'),
                1 => Just(b'&'),
                1 => Just(b'='),
                1 => 0x80u8..=0xff,
            ],
            0..60,
        )
        .prop_map(|v| v.into_iter().filter(|b| *b != b'#').collect::<Vec<u8>>())
    };
    check(
        "query strings",
        cases(256),
        &[],
        move || (paths(), query(), prop::bool::ANY),
        |addr, (path, query, post)| async move {
            let mut target = path.as_bytes().to_vec();
            target.push(b'?');
            target.extend_from_slice(&query);
            let method = if post && path.ends_with("messages") {
                "POST"
            } else {
                "GET"
            };
            let mut req = format!("{method} ").into_bytes();
            req.extend_from_slice(&target);
            req.extend_from_slice(
                b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1",
            );
            let r = raw_http(addr, &req).await?;
            // Bytes RFC 3986 does not allow in a request target make the
            // request line itself malformed: hyper refuses it with a bare
            // 400 before any handler runs (documented in reliability.md).
            let legal =
                |b: &u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(b);
            if r.status == 400 && !query.iter().all(legal) && r.body.is_empty() {
                return Ok(());
            }
            r.check_answer()
                .map_err(|e| format!("{method} {}: {e}", String::from_utf8_lossy(&target)))
        },
    );
}

#[test]
fn sse_cursors_from_header_and_query() {
    let arb_cursor = || {
        prop_oneof![
            prop::collection::vec(arb_id(), 0..4).prop_map(|ids| ids.join(",")),
            "[0-9, -]{0,40}",
            ".{0,30}",
        ]
    };
    check(
        "sse cursor",
        cases(256),
        &[],
        move || (1usize..4, arb_cursor(), prop::bool::ANY),
        |addr, (n, cursor, in_header)| async move {
            let channels: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
            let mut path = format!("/sse?channels={}", channels.join(","));
            let mut headers: Vec<(&str, &[u8])> = Vec::new();
            let header_ok = cursor.bytes().all(|b| (0x20..0x7f).contains(&b));
            if in_header {
                if !header_ok {
                    return Ok(()); // not a legal header value
                }
                headers.push(("Last-Event-ID", cursor.as_bytes()));
            } else {
                path.push_str(&format!("&lastEventId={}", pct(cursor.as_bytes())));
            }
            let r = raw_http(addr, &request("GET", &path, &headers, b"")).await?;
            r.check_answer()?;
            let parts: Vec<&str> = cursor.trim().split(',').collect();
            let valid =
                cursor.trim().is_empty() || (parts.len() == n && parts.iter().all(|p| valid_id(p)));
            match (valid, r.status) {
                (true, 200) if r.body.starts_with(b"retry: ") => Ok(()),
                (false, 400) if r.error_code()? == "invalid_cursor" => Ok(()),
                _ => Err(format!(
                    "cursor {cursor:?} for {n} channels (valid: {valid}): {r:?}"
                )),
            }
        },
    );
}

#[test]
fn tokens_in_query_and_header() {
    let token = || {
        prop_oneof![
            ".{0,40}",
            "[A-Za-z0-9_-]{1,30}\\.[A-Za-z0-9_-]{1,60}\\.[A-Za-z0-9_-]{0,40}",
            Just("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_string()),
            Just("eyJhbGciOiJIUzI1NiJ9.e30.".to_string()),
            "[ -~]{0,200}",
        ]
    };
    check(
        "tokens",
        cases(256),
        &["--jwt-secret", "a-secret-for-tests", "--publish-key", "pk"],
        move || (token(), 0..4usize, prop::bool::ANY),
        |addr, (token, endpoint, in_header)| async move {
            let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut q = String::new();
            if token == "pk" {
                return Ok(());
            }
            if in_header || endpoint == 3 {
                if !token.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Ok(());
                }
                headers.push(("Authorization", format!("Bearer {token}").into_bytes()));
            } else {
                q = format!("token={}", pct(token.as_bytes()));
            }
            let (method, path) = match endpoint {
                0 => ("GET", format!("/sse?channels=t&{q}")),
                1 => ("GET", format!("/api/v1/channels/t/messages?{q}")),
                2 => ("GET", format!("/api/v1/channels/t/presence?{q}")),
                _ => ("POST", "/api/v1/channels/t/messages".to_string()),
            };
            let h: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let r = raw_http(addr, &request(method, &path, &h, b"1")).await?;
            r.check_answer()?;
            // A random string is never a valid token (and never the key "pk").
            if r.status != 401 {
                return Err(format!("token {token:?} on {path}: want 401, got {r:?}"));
            }
            Ok(())
        },
    );
}
