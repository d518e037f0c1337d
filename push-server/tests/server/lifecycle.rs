//! The built binary: --help, configuration sources, drain on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_push-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and waits for /healthz.
async fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Proc, TestServer) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("PUSH_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Proc(cmd.spawn().expect("spawn push-server"));
    let s = TestServer {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        server: None,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = client().get(s.http("/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "push-server did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, s)
}

#[test]
fn help_lists_every_setting_with_its_default() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    // Collapse the wrapping of the terminal-width layout.
    let help = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for setting in [
        "listen",
        "heartbeat",
        "idle_timeout",
        "sse_heartbeat",
        "max_connections",
        "max_channels_per_connection",
        "max_message_bytes",
        "outbound_queue",
        "history_size",
        "history_ttl",
        "ack_timeout",
        "max_redeliveries",
        "ack_window",
        "drain_period",
        "max_connection_lifetime",
        "jwt_secret",
        "jwt_public_key",
        "publish_key",
        "redis_url",
        "redis_sentinel",
        "redis_master_name",
        "redis_cluster",
        "publish_min_replicas",
        "allowed_origins",
        "log_format",
        "config",
    ] {
        let flag = format!("--{}", setting.replace('_', "-"));
        let env = format!("PUSH_{}", setting.to_uppercase());
        assert!(help.contains(&flag), "{flag} missing from --help");
        assert!(help.contains(&env), "{env} missing from --help");
    }
    for default in [
        "0.0.0.0:8080",
        "25s",
        "60s",
        "15s",
        "100000",
        "65536",
        "1024",
        "300s",
        "30s",
    ] {
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} missing"
        );
    }
}

#[test]
fn bad_configuration_exits_with_a_clear_message() {
    let out = Command::new(BIN)
        .args(["--heartbeat", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat"));
}

#[tokio::test]
async fn env_and_yaml_configure_the_binary() {
    let dir = std::env::temp_dir().join(format!("push-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("push.yaml");
    std::fs::write(&file, "max_message_bytes: 10\nheartbeat: 5s\n").unwrap();
    let (_p, s) = spawn(
        &["--config", file.to_str().unwrap()],
        &[("PUSH_HEARTBEAT", "3s"), ("PUSH_LOG_FORMAT", "json")],
    )
    .await;
    let r = client()
        .post(s.http("/api/v1/channels/c/messages"))
        .body("01234567890")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 413).await,
        "message_too_large",
        "YAML max_message_bytes applied"
    );
    let mut ws = ws_connect(&s, "").await;
    assert_eq!(
        ws_next(&mut ws).await["heartbeat_ms"],
        3000,
        "env beats the YAML file"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let (mut p, s) = spawn(&["--drain-period", "1500ms"], &[]).await;
    let mut ws = ws_subscribed(&s, "d").await;
    let mut sse = sse_connect(&s, "?channels=d", None).await;
    let id = publish(&s, "d", "1").await;
    assert_eq!(ws_next(&mut ws).await["id"], id);

    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    // Readiness turns 503 and new connections are refused.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client().get(s.http("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            assert_eq!(error_code(r, 503).await, "draining");
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = client()
        .get(s.http("/sse?channels=d"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 503).await, "draining");
    // The memory broker's history dies with the process: a publish now is
    // refused (and can be retried elsewhere) rather than accepted and lost.
    let r = client()
        .post(s.http("/api/v1/channels/d/messages"))
        .body("2")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 503).await, "draining");

    let mut ws_reason = None;
    while ws_reason.is_none() {
        let f = ws_next(&mut ws).await;
        if f["type"] == "reconnect" {
            ws_reason = f["reason"].as_str().map(String::from);
        }
    }
    assert_eq!(ws_reason.as_deref(), Some("draining"));
    loop {
        let ev = sse.next().await;
        if ev.event.as_deref() == Some("reconnect") {
            assert_eq!(
                serde_json::from_str::<Value>(&ev.data).unwrap()["reason"],
                "draining"
            );
            break;
        }
    }
    let status = tokio::task::spawn_blocking(move || p.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500) + Duration::from_secs(3),
        "exited within the drain period"
    );
}
