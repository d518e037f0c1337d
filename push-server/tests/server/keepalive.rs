//! A refused request whose body the handler did not read (issue 16): a raw
//! keep-alive client sends the whole body, reads the refusal, and then either
//! sees `Connection: close` or may send its next request on the same
//! connection, which must succeed. Never a silent close, never a next
//! request left hanging.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends `head` + a body of `body_len` bytes whole (written while the answer
/// is read, as a pooled client does), expects `status`/`code`, then proves
/// the connection is either announced closed or still good for a publish.
async fn refused_then_next_request(
    s: &TestServer,
    head: &str,
    body_len: usize,
    status: u16,
    code: &str,
) {
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let mut request = format!("{head}content-length: {body_len}\r\n\r\n").into_bytes();
    // A JSON string, so that the body is valid whatever the route reads.
    request.push(b'"');
    request.resize(request.len() + body_len - 2, b'a');
    request.push(b'"');
    let (mut rd, mut wr) = tcp.split();
    let write = async {
        wr.write_all(&request).await.expect("request written whole");
    };
    let mut buf = Vec::new();
    let read = async {
        // Read through the split half: the answer may come before the body
        // is all written.
        let mut chunk = vec![0u8; 65536];
        loop {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            let n = tokio::time::timeout(WAIT, rd.read(&mut chunk))
                .await
                .expect("first answer in time")
                .expect("read first answer");
            assert!(n > 0, "connection closed without an answer");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::join!(write, read);
    let first = read_answer(&mut tcp, &mut buf, "refusal").await;
    assert_eq!(
        first.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.code(), code);

    if first.closes() {
        // Announced: the server closes after the answer (EOF or reset).
        let mut rest = [0u8; 1024];
        loop {
            match tokio::time::timeout(WAIT, tcp.read(&mut rest)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => panic!("Connection: close announced but the connection stays open"),
            }
        }
    }
    // Kept alive: the next request on this connection must be answered.
    let next = "POST /api/v1/channels/after/messages HTTP/1.1\r\nhost: push\r\n\
                authorization: Bearer pk\r\ncontent-type: application/json\r\n\
                content-length: 2\r\n\r\n42";
    tcp.write_all(next.as_bytes()).await.expect("next request");
    let second = read_answer(&mut tcp, &mut buf, "next request on the kept connection").await;
    assert_eq!(
        second.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&second.body)
    );
}

#[tokio::test]
async fn too_large_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    let head = "POST /api/v1/channels/news/messages HTTP/1.1\r\nhost: push\r\n\
                authorization: Bearer pk\r\ncontent-type: application/json\r\n";
    refused_then_next_request(&s, head, 300_000, 413, "message_too_large").await;
}

#[tokio::test]
async fn bad_request_with_a_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    // The channel is refused before the body is read.
    let head = "POST /api/v1/channels/bad%20name/messages HTTP/1.1\r\nhost: push\r\n\
                authorization: Bearer pk\r\ncontent-type: application/json\r\n";
    refused_then_next_request(&s, head, 60_000, 400, "invalid_channel").await;
}

#[tokio::test]
async fn unauthorized_with_a_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    // No key: refused before the body is read.
    let head = "POST /api/v1/channels/news/messages HTTP/1.1\r\nhost: push\r\n\
                content-type: application/json\r\n";
    refused_then_next_request(&s, head, 60_000, 401, "unauthorized").await;
}

#[tokio::test]
async fn unauthorized_batch_with_a_body_then_next_request() {
    let s = start(&["--publish-key", "pk"]).await;
    let head = "POST /api/v1/publish HTTP/1.1\r\nhost: push\r\ncontent-type: application/json\r\n";
    refused_then_next_request(&s, head, 300_000, 401, "unauthorized").await;
}

#[tokio::test]
async fn body_beyond_the_drain_bound_is_answered_with_connection_close() {
    let s = start(&["--publish-key", "pk"]).await;
    let head = "POST /api/v1/channels/news/messages HTTP/1.1\r\nhost: push\r\n\
                content-type: application/json\r\n";
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    // Announces 64 MiB, sends only the head: the server must not wait for
    // (or read) all of it before refusing.
    let request = format!("{head}content-length: {}\r\n\r\n\"aaaa", 64 << 20);
    tcp.write_all(request.as_bytes()).await.expect("head");
    let mut buf = Vec::new();
    let answer = read_answer(&mut tcp, &mut buf, "refusal of a huge body").await;
    assert_eq!(answer.status, 401);
    assert!(answer.closes(), "{:?}", answer.headers);
}

#[tokio::test]
async fn sse_as_a_later_request_of_a_keep_alive_connection() {
    // Not the first request of its connection: served through hyper (the
    // raw path only takes fresh connections), with the same events.
    let s = start(&[]).await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: push\r\n\r\n")
        .await
        .expect("first request");
    let mut buf = Vec::new();
    let first = read_answer(&mut tcp, &mut buf, "healthz").await;
    assert_eq!(first.status, 200);
    tcp.write_all(b"GET /sse?channels=later HTTP/1.1\r\nhost: push\r\n\r\n")
        .await
        .expect("stream request");
    let head = read_until(&mut tcp, "stream opening", |got| {
        let text = String::from_utf8_lossy(got);
        text.contains("retry: 2000").then(|| text.into_owned())
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let id = publish(&s, "later", "42").await;
    let events = read_until(&mut tcp, "the published message", |got| {
        let text = String::from_utf8_lossy(got);
        text.contains("event: message").then(|| text.into_owned())
    })
    .await;
    assert!(events.contains(&format!("\"id\":\"{id}\"")), "{events}");
}

// ---- the raw publish path (http::publish) ----

/// A plain publish request, as a backend's HTTP client sends it.
fn publish_request(channel: &str, body: &str, extra: &str) -> String {
    format!(
        "POST /api/v1/channels/{channel}/messages HTTP/1.1\r\nhost: push\r\n\
         content-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn json_body(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).expect("JSON body")
}

#[tokio::test]
async fn pipelined_publishes_are_answered_in_order_and_delivered_in_order() {
    let s = start(&[]).await;
    let mut ws = ws_subscribed(&s, "pipe").await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    // Every request in one write: the server reads them together.
    let n = 200;
    let all: String = (0..n)
        .map(|i| publish_request("pipe", &i.to_string(), ""))
        .collect();
    tcp.write_all(all.as_bytes()).await.expect("requests");
    let mut buf = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let a = read_answer(&mut tcp, &mut buf, &format!("answer {i}")).await;
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
        let v = json_body(&a);
        assert_eq!(v["channel"], "pipe");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    let pairs: Vec<_> = ids.iter().map(|id| id_pair(id)).collect();
    assert!(
        pairs.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let m = ws_next(&mut ws).await;
        assert_eq!(
            (&m["id"], &m["data"]),
            (&Value::from(id.as_str()), &Value::from(i))
        );
    }
}

#[tokio::test]
async fn a_pipeline_goes_on_through_the_router_from_its_first_other_request() {
    let s = start(&[]).await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let batch = r#"{"messages":[{"channel":"mixed","data":3}]}"#;
    let all = [
        publish_request("mixed", "1", ""),
        "GET /healthz HTTP/1.1\r\nhost: push\r\n\r\n".to_string(),
        publish_request("mixed", "2", ""),
        format!(
            "POST /api/v1/publish HTTP/1.1\r\nhost: push\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{batch}",
            batch.len()
        ),
        publish_request("mixed", "4", "connection: close\r\n"),
    ]
    .concat();
    tcp.write_all(all.as_bytes()).await.expect("requests");
    let mut buf = Vec::new();
    let answers = [
        read_answer(&mut tcp, &mut buf, "publish 1").await,
        read_answer(&mut tcp, &mut buf, "healthz").await,
        read_answer(&mut tcp, &mut buf, "publish 2").await,
        read_answer(&mut tcp, &mut buf, "batch").await,
        read_answer(&mut tcp, &mut buf, "publish 4").await,
    ];
    let bodies: Vec<Value> = answers.iter().map(json_body).collect();
    assert!(answers.iter().all(|a| a.status == 200), "{bodies:?}");
    assert_eq!(bodies[0]["channel"], "mixed");
    assert_eq!(bodies[1]["status"], "ok");
    assert_eq!(bodies[2]["channel"], "mixed");
    assert_eq!(bodies[3]["results"][0]["channel"], "mixed");
    assert!(answers[4].closes(), "{:?}", answers[4].headers);
    let mut rest = [0u8; 64];
    let eof = tokio::time::timeout(WAIT, tcp.read(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(0)) | Ok(Err(_))), "not closed: {eof:?}");
    let data: Vec<Value> = history_messages(&s, "mixed")
        .await
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [1, 2, 3, 4].map(Value::from));
}

/// Sends `request` as the first request of a fresh connection (the raw
/// path) and after a `GET /healthz` (the router); both answers.
async fn both_ways(s: &TestServer, request: &str) -> (Answer, Answer) {
    let mut raw = TcpStream::connect(s.addr).await.expect("connect");
    raw.write_all(request.as_bytes()).await.expect("request");
    let mut buf = Vec::new();
    let first = read_answer(&mut raw, &mut buf, "raw path").await;
    let mut routed = TcpStream::connect(s.addr).await.expect("connect");
    routed
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: push\r\n\r\n{request}").as_bytes())
        .await
        .expect("requests");
    let mut buf = Vec::new();
    read_answer(&mut routed, &mut buf, "healthz").await;
    let second = read_answer(&mut routed, &mut buf, "router").await;
    (first, second)
}

#[tokio::test]
async fn the_raw_path_answers_as_the_router_does() {
    for args in [
        &[][..],
        &[
            "--publish-key",
            "pk",
            "--allowed-origins",
            "https://app.example",
        ][..],
    ] {
        let s = start(args).await;
        let auth = "authorization: Bearer pk\r\n";
        for (request, status) in [
            (publish_request("same", "{\"a\":1}", auth), 200),
            (
                publish_request("same", "plain text", auth)
                    .replace("application/json", "text/plain"),
                200,
            ),
            (publish_request("bad!name", "1", auth), 400),
            (publish_request("same", "{bad", auth), 400),
            (
                publish_request("same", "1", "authorization: Bearer nope\r\n"),
                if args.is_empty() { 200 } else { 401 },
            ),
            (
                publish_request("same", "1", ""),
                if args.is_empty() { 200 } else { 401 },
            ),
            (
                publish_request("same", "1", &format!("{auth}connection: close\r\n")),
                200,
            ),
        ] {
            let (raw, routed) = both_ways(&s, &request).await;
            assert_eq!((raw.status, routed.status), (status, status), "{request:?}");
            let names = |a: &Answer| {
                let mut n: Vec<String> = a.headers.iter().map(|(n, _)| n.clone()).collect();
                n.sort_unstable();
                n
            };
            assert_eq!(names(&raw), names(&routed), "{request:?}");
            for (name, value) in &routed.headers {
                if name != "date" && name != "content-length" {
                    assert_eq!(
                        raw.header(name),
                        Some(value.as_str()),
                        "{name} of {request:?}"
                    );
                }
            }
            if status == 200 {
                assert_eq!(json_body(&raw)["channel"], json_body(&routed)["channel"]);
            } else {
                assert_eq!(raw.body, routed.body, "{request:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_pipelines_without_reading_stops_being_read() {
    let s = start(&[]).await;
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let request = publish_request("flood", "1", "");
    let per_chunk = 65536 / request.len();
    let chunk = request.repeat(per_chunk);
    // Were the answers buffered without bound, the server would read all of
    // this; it must stop reading once its answers are not read.
    let cap = 64 << 20;
    let mut chunks = 0;
    let stalled = loop {
        if chunks * chunk.len() > cap {
            break false;
        }
        match tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tcp.write_all(chunk.as_bytes()),
        )
        .await
        {
            Ok(Ok(())) => chunks += 1,
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break true,
        }
    };
    assert!(
        stalled,
        "the server read {chunks} chunks of requests without its answers being read"
    );
    // Nothing is lost: every whole chunk sent is answered, in order.
    let mut buf = Vec::new();
    for i in 0..chunks * per_chunk {
        let a = read_answer(&mut tcp, &mut buf, &format!("answer {i}")).await;
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    }
}
