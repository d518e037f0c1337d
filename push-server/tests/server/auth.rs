//! JWT auth, publish keys, limits (docs/security.md) with tokens made here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::*;

const SECRET: &str = "test-secret-that-is-long-enough";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn sub_token(channels: &[&str]) -> String {
    hs256(json!({"sub": "alice", "exp": now() + 600, "channels": channels}))
}

async fn hs_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--jwt-secret", SECRET, "--publish-key", "pk-one,pk-two"];
    args.extend_from_slice(extra);
    start(&args).await
}

/// The status and error code of a refused WebSocket handshake.
async fn ws_refused(s: &TestServer, query: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(s.ws_url(&format!("/ws{query}"))).await {
        Ok(_) => panic!("handshake accepted: {query}"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            (
                resp.status().as_u16(),
                body["error"]["code"].as_str().unwrap().to_string(),
            )
        }
        Err(e) => panic!("unexpected {e}"),
    }
}

#[tokio::test]
async fn valid_tokens_in_query_and_header() {
    let s = hs_server(&[]).await;
    let t = sub_token(&["news"]);
    let mut ws = ws_subscribed(&s, &format!("news&token={t}")).await;
    publish_with(&s, "news", "1", "pk-one").await;
    assert_eq!(ws_next(&mut ws).await["data"], 1);

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url("/ws?channels=news").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {t}").parse().unwrap());
    let (mut ws2, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(ws_next(&mut ws2).await["type"], "welcome");
    assert_eq!(ws_next(&mut ws2).await["type"], "subscribed");

    let r = client()
        .get(s.http("/sse?channels=news"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(s.http(&format!("/sse?channels=news&token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn publish_with(s: &TestServer, channel: &str, body: &str, key: &str) -> reqwest::Response {
    let r = client()
        .post(s.http(&format!("/api/v1/channels/{channel}/messages")))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    r
}

#[tokio::test]
async fn refused_tokens() {
    let s = hs_server(&[]).await;
    let expired = hs256(json!({"sub": "a", "exp": now() - 60, "channels": ["x"]}));
    let early =
        hs256(json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300, "channels": ["x"]}));
    let no_exp = hs256(json!({"sub": "a", "channels": ["x"]}));
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "a", "exp": now() + 600, "channels": ["x"]}),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"sub": "a", "exp": now() + 600, "channels": ["x"]}).to_string())
    );
    let cases = [
        ("", 401, "unauthorized"),
        (expired.as_str(), 401, "token_expired"),
        (early.as_str(), 401, "invalid_token"),
        (no_exp.as_str(), 401, "invalid_token"),
        (wrong_key.as_str(), 401, "invalid_token"),
        (none.as_str(), 401, "invalid_token"),
        ("garbage", 401, "invalid_token"),
    ];
    for (token, status, code) in cases {
        let q = if token.is_empty() {
            "?channels=x".to_string()
        } else {
            format!("?channels=x&token={token}")
        };
        assert_eq!(
            ws_refused(&s, &q).await,
            (status, code.to_string()),
            "ws {token:?}"
        );
        let r = client()
            .get(s.http(&format!("/sse{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, status).await, code, "sse {token:?}");
        let r = client()
            .get(s.http(&format!(
                "/api/v1/channels/x/messages{}",
                q.replace("?channels=x", "?")
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, status).await, code, "history {token:?}");
    }
}

#[tokio::test]
async fn channel_grants_patterns_and_personal_channels() {
    let s = hs_server(&[]).await;
    let t = sub_token(&["news", "chat:*"]);
    let mut ws = ws_connect(&s, &format!("?token={t}")).await;
    ws_next(&mut ws).await;
    for (ch, ok) in [
        ("news", true),
        ("chat:room1", true),
        ("user:alice", true),
        ("user:bob", false),
        ("sports", false),
        ("chat", false),
    ] {
        ws_send(&mut ws, json!({"type": "subscribe", "channel": ch})).await;
        let f = ws_next(&mut ws).await;
        if ok {
            assert_eq!(f["type"], "subscribed", "{ch}: {f}");
        } else {
            assert_eq!(
                (
                    f["type"].as_str(),
                    f["code"].as_str(),
                    f["channel"].as_str()
                ),
                (Some("error"), Some("forbidden"), Some(ch))
            );
        }
    }
    ws_send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        ws_next(&mut ws).await["type"],
        "pong",
        "the connection stays after a 403"
    );

    let r = client()
        .get(s.http(&format!("/sse?channels=news,sports&token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "forbidden");
    let r = client()
        .get(s.http(&format!("/api/v1/channels/sports/messages?token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "forbidden");
    let r = client()
        .get(s.http(&format!("/api/v1/channels/news/presence?token={t}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["users"], json!(["alice"]));
}

#[tokio::test]
async fn publishers_need_a_key_or_a_publish_grant() {
    let s = hs_server(&[]).await;
    assert_eq!(publish_with(&s, "news", "1", "pk-two").await.status(), 200);
    assert_eq!(
        error_code(publish_with(&s, "news", "1", "pk-three").await, 401).await,
        "invalid_token"
    );
    let r = client()
        .post(s.http("/api/v1/channels/news/messages"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let r = client()
        .post(s.http("/api/v1/publish"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");

    let publisher =
        hs256(json!({"sub": "svc", "exp": now() + 600, "publish": ["news", "alerts:*"]}));
    assert_eq!(
        publish_with(&s, "alerts:fire", "1", &publisher)
            .await
            .status(),
        200
    );
    assert_eq!(
        error_code(publish_with(&s, "sports", "1", &publisher).await, 403).await,
        "forbidden"
    );
    assert_eq!(
        error_code(
            publish_with(&s, "news", "1", &sub_token(&["news"])).await,
            403
        )
        .await,
        "forbidden"
    );
    // A publish key reads history too (backends catch up that way).
    let r = client()
        .get(s.http("/api/v1/channels/news/messages"))
        .bearer_auth("pk-one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // WebSocket publish frames follow the token's publish grant.
    let both =
        hs256(json!({"sub": "bob", "exp": now() + 600, "channels": ["news"], "publish": ["news"]}));
    let mut ws = ws_connect(&s, &format!("?token={both}")).await;
    ws_next(&mut ws).await;
    ws_send(
        &mut ws,
        json!({"type": "publish", "channel": "news", "data": 1}),
    )
    .await;
    assert_eq!(ws_next(&mut ws).await["type"], "published");
    let forbidden = "push_publish_errors_total{code=\"forbidden\"}";
    let before = metric(&s, forbidden).await;
    ws_send(
        &mut ws,
        json!({"type": "publish", "channel": "other", "data": 1}),
    )
    .await;
    assert_eq!(ws_next(&mut ws).await["code"], "forbidden");
    // A refused WebSocket publish is counted like an HTTP one.
    assert_eq!(metric(&s, forbidden).await, before + 1.0);
}

fn openssl(args: &[&str]) {
    let st = std::process::Command::new("openssl")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

#[tokio::test]
async fn rs256_and_es256_keys_and_algorithm_confusion() {
    let dir = std::env::temp_dir().join(format!("push-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &p("rsa.pem"),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &p("rsa.pem"),
        "-pubout",
        "-out",
        &p("rsa.pub"),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &p("ec.pem"),
    ]);
    openssl(&["pkey", "-in", &p("ec.pem"), "-pubout", "-out", &p("ec.pub")]);
    let claims = json!({"sub": "carol", "exp": now() + 600, "channels": ["k"]});

    let rsa = start(&["--jwt-public-key", &p("rsa.pub")]).await;
    let priv_pem = std::fs::read(p("rsa.pem")).unwrap();
    let good = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&priv_pem).unwrap(),
    )
    .unwrap();
    ws_subscribed(&rsa, &format!("k&token={good}")).await;
    // Algorithm confusion: HS256 "signed" with the public key as secret.
    let pub_pem = std::fs::read(p("rsa.pub")).unwrap();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&pub_pem),
    )
    .unwrap();
    assert_eq!(
        ws_refused(&rsa, &format!("?token={forged}")).await,
        (401, "invalid_token".into())
    );

    // The PEM text itself works as well as a path (env var from a Secret).
    let ec_pub = std::fs::read_to_string(p("ec.pub")).unwrap();
    let ec = start(&[&format!("--jwt-public-key={ec_pub}")]).await;
    let ec_priv = std::fs::read(p("ec.pem")).unwrap();
    let good = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(&ec_priv).unwrap(),
    )
    .unwrap();
    ws_subscribed(&ec, &format!("k&token={good}")).await;
    let rs_token = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&priv_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ws_refused(&ec, &format!("?token={rs_token}")).await,
        (401, "invalid_token".into())
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn live_websocket_is_told_when_its_token_expires() {
    let s = hs_server(&[]).await;
    // exp one second ahead; the server adds its 5 s leeway.
    let t = hs256(json!({"sub": "a", "exp": now() + 1, "channels": ["e"]}));
    let mut ws = ws_subscribed(&s, &format!("e&token={t}")).await;
    let f = ws_next(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["reason"].as_str()),
        (Some("reconnect"), Some("token_expired"))
    );
}

#[tokio::test]
async fn per_ip_connection_cap_and_publish_rate_limit() {
    let s = start(&["--max-connections-per-ip", "2", "--publish-rate-limit", "3"]).await;
    let mut a = ws_connect(&s, "").await;
    ws_next(&mut a).await;
    let _b = sse_connect(&s, "?channels=x", None).await;
    let r = client()
        .get(s.http("/sse?channels=x"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r, 429).await, "too_many_connections_from_ip");

    let mut codes = Vec::new();
    for _ in 0..4 {
        ws_send(
            &mut a,
            json!({"type": "publish", "channel": "x", "data": 1}),
        )
        .await;
        let f = ws_next(&mut a).await;
        codes.push(
            f["code"]
                .as_str()
                .unwrap_or(f["type"].as_str().unwrap())
                .to_string(),
        );
    }
    assert_eq!(
        codes,
        ["published", "published", "published", "rate_limited"]
    );
    drop(a);
    wait_metric(&s, "push_connections{transport=\"ws\"}", 0.0).await;
    let _c = ws_connect(&s, "").await;
    let _ = Duration::ZERO;
}
