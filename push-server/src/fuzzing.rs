//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz) and of the
//! reliability tests: each runs one parser on arbitrary input and panics
//! only when an invariant breaks. Hidden from the docs; not an API.
//!
//! One module instead of widening the parsers' visibility: the parsers keep
//! their narrow signatures, and what the fuzzers reach is listed here.

use std::str::FromStr;

use serde_json::Value;

use crate::protocol::frames::{self, ClientCommand};
use crate::protocol::message::{check_depth, compact_json, validate_channel};
use crate::protocol::{cursor, Data, MessageId};

/// `<ms>-<seq>` ids: what parses prints back to itself, and orders as the
/// `(ms, seq)` pair it prints.
pub fn message_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = MessageId::from_str(text) {
        let printed = id.to_string();
        assert_eq!(MessageId::from_str(&printed), Ok(id), "{text:?}");
        let (ms, seq) = text.split_once('-').expect("a dash");
        assert_eq!(
            (ms.parse::<u64>().ok(), seq.parse::<u64>().ok()),
            (Some(id.ms), Some(id.seq))
        );
    }
}

/// SSE cursors: a cursor that parses for `n` channels holds `n` ids and
/// writes back to a cursor that parses to the same ids.
pub fn sse_cursor(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 5);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(ids) = cursor::parse(text, n) {
        assert_eq!(ids.len(), n);
        let mut out = Vec::new();
        cursor::write(&ids, &mut out);
        let again = std::str::from_utf8(&out).expect("ASCII");
        assert_eq!(cursor::parse(again, n), Ok(ids), "{text:?} → {again:?}");
    }
}

/// Publish bodies: a JSON body is refused or stored as the same JSON value
/// with no raw newline; a text body becomes the JSON string of its text.
pub fn publish_body(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let json = kind % 2 == 0;
    let data = if json {
        Data::JsonBody(body)
    } else {
        Data::Text(body)
    };
    let Ok(stored) = data.encode() else {
        return;
    };
    assert!(!stored.contains(&b'\n'), "raw newline in {stored:?}");
    assert!(check_depth(&stored).is_ok());
    if json {
        // Numbers out of f64 range are valid JSON that serde_json's Value
        // refuses: compare only what it can read.
        if let Ok(want) = serde_json::from_slice::<Value>(body) {
            let got: Value = serde_json::from_slice(&stored).expect("stored data is JSON");
            assert_eq!(got, want);
        }
        assert_eq!(compact_json(&stored), stored, "compaction is idempotent");
    } else {
        let got: Value = serde_json::from_slice(&stored).expect("stored text is JSON");
        assert_eq!(got.as_str().map(str::as_bytes), Some(body));
    }
}

/// The configuration loader with `data` as the YAML file: any file is
/// loaded or refused with an error, never a panic.
pub fn config_yaml(data: &[u8]) {
    use std::io::Write;
    thread_local! {
        static PATH: std::path::PathBuf = std::env::temp_dir().join(format!(
            "push-fuzz-config-{}-{:?}.yaml",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    PATH.with(|path| {
        let mut f = std::fs::File::create(path).expect("temp file");
        f.write_all(data).expect("write");
        drop(f);
        let args = [
            "push-server",
            "--config",
            path.to_str().expect("utf-8 path"),
        ];
        if let Ok(c) = crate::config::Config::load_from(args) {
            assert!(c.idle_timeout > c.heartbeat && c.outbound_queue > 0);
        }
    });
}

/// WebSocket text frames through the parser of client frames
/// (`protocol::frames`) and the publish path's data checks: a parsed
/// channel is valid where the parser checks it, ids print back to
/// themselves, and a publish's `data` compacts to the same JSON value with
/// no raw newline.
pub fn ws_text_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(command) = frames::parse(text) else {
        return;
    };
    match command {
        ClientCommand::Subscribe { channel, since, .. } => {
            assert!(validate_channel(&channel).is_ok(), "{channel:?}");
            if let Some(id) = since {
                message_id(id.to_string().as_bytes());
            }
        }
        ClientCommand::Ack { id: Some(id), .. } => message_id(id.to_string().as_bytes()),
        ClientCommand::Publish { data: raw, .. } => {
            if let Ok(compact) = Data::Json(raw).encode() {
                assert!(!compact.contains(&b'\n'));
                if let Ok(want) = serde_json::from_str::<Value>(raw.get()) {
                    let got: Value =
                        serde_json::from_slice(&compact).expect("compacted data is JSON");
                    assert_eq!(got, want);
                }
            } else {
                assert!(check_depth(raw.get().as_bytes()).is_err());
            }
            assert!(compact_json(raw.get().as_bytes()).len() <= raw.get().len());
        }
        _ => {}
    }
}
