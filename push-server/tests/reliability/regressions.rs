//! Inputs that once broke something (found by the property tests or the
//! fuzzers), kept as plain tests so they never come back.

use serde_json::Value;

use crate::common::*;
use crate::rawws::*;

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Found by `publish_bodies_and_content_types`: a body nested ~126 deep was
/// accepted, and then the history page holding it (three levels deeper) was
/// past serde_json's recursion limit of 128 — every Rust client failed to
/// read the channel. Data is now limited to 64 levels, on every publish path.
#[tokio::test]
async fn deeply_nested_data_is_refused_on_every_publish_path() {
    let s = start(&[]).await;
    let deep = nested(100);
    let ok = nested(64);
    let post = |path: &str, body: String| {
        request(
            "POST",
            path,
            &[("Content-Type", b"application/json")],
            body.as_bytes(),
        )
    };
    let r = raw_http(
        s.addr,
        &post("/api/v1/channels/deep/messages", deep.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status, r.error_code().unwrap().as_str()),
        (400, "invalid_json")
    );
    let batch = format!(r#"{{"messages":[{{"channel":"deep","data":{deep}}}]}}"#);
    let r = raw_http(s.addr, &post("/api/v1/publish", batch))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().unwrap().as_str()),
        (400, "invalid_json")
    );

    let mut ws = RawWs::connect(s.addr, "/ws").await.unwrap();
    ws.next_json().await.unwrap();
    let frame = format!(r#"{{"type":"publish","channel":"deep","data":{deep}}}"#);
    ws.send(&Frame::text(&frame)).await.unwrap();
    let err = ws.next_json().await.unwrap();
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("invalid_json")),
        "{err}"
    );

    // 64 levels: accepted, and readable by a default serde_json everywhere.
    let r = raw_http(s.addr, &post("/api/v1/channels/deep/messages", ok.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let frame = format!(r#"{{"type":"publish","channel":"deep","data":{ok}}}"#);
    ws.send(&Frame::text(&frame)).await.unwrap();
    assert_eq!(ws.next_json().await.unwrap()["type"], "published");
    let r = raw_http(
        s.addr,
        &request("GET", "/api/v1/channels/deep/messages", &[], b""),
    )
    .await
    .unwrap();
    let page: Value = serde_json::from_slice(&r.body).expect("history page parses");
    let want: Value = serde_json::from_str(&ok).unwrap();
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["messages"][0]["data"], want);
    assert_eq!(page["messages"][1]["data"], want);
}

/// Every seed and every crash the fuzzers ever found (`fuzz/seeds/<target>`,
/// `fuzz/regressions/<target>`), replayed through the fuzz entry points.
#[test]
fn fuzz_seeds_and_regressions_replay() {
    use push_server::fuzzing;
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 5] = [
        ("ws_text_frame", fuzzing::ws_text_frame),
        ("sse_cursor", fuzzing::sse_cursor),
        ("message_id", fuzzing::message_id),
        ("config_yaml", fuzzing::config_yaml),
        ("publish_body", fuzzing::publish_body),
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (name, run) in targets {
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).unwrap();
                run(&data);
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 5, "found the seed corpus ({replayed} inputs)");
}
