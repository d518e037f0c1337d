//! `/metrics` of a real push-server process: the separate metrics port
//! (`--metrics-listen`), `push_build_info` and the `process_*` metrics,
//! whose open-fd count follows the connections the server holds; and the
//! start-up refusals of the new settings, given as a Kubernetes pod gives
//! them (environment variables).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_push-server");
const WAIT: Duration = Duration::from_secs(20);

/// Kills the server when the test ends, passed or not.
struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn spawn(args: &[&str]) -> Server {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("PUSH_") {
            cmd.env_remove(k);
        }
    }
    Server(
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start push-server"),
    )
}

/// `GET path` on `port`: the status and the body (`None`: not listening).
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

async fn until_get(port: u16, path: &str) -> (u16, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(r) = get(port, path).await {
            return r;
        }
        assert!(Instant::now() < deadline, "no answer on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the first sample of `name` (with any labels).
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(port: u16) -> String {
    let (status, body) = until_get(port, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn separate_metrics_port_with_build_and_process_metrics() {
    let (public, metrics) = (free_port(), free_port());
    let _server = spawn(&[
        "--listen",
        &format!("127.0.0.1:{public}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
    ]);
    let body = scrape(metrics).await;

    // Only the metrics port shows /metrics; it serves nothing else.
    let (status, _) = until_get(public, "/metrics").await;
    assert_eq!(status, 404, "public port must not serve /metrics");
    assert_eq!(until_get(public, "/healthz").await.0, 200);
    assert_eq!(until_get(metrics, "/healthz").await.0, 404);
    assert_eq!(until_get(metrics, "/api/v1/publish").await.0, 404);

    // push_build_info{version,commit} 1
    let info = body
        .lines()
        .find(|l| l.starts_with("push_build_info{"))
        .unwrap_or_else(|| panic!("no push_build_info in\n{body}"));
    assert!(info.ends_with(" 1"), "{info}");
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    let commit = info
        .split("commit=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("commit label");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    if commit != "unknown" {
        // A commit of this repository (HEAD may have moved on since the build).
        let known = Command::new("git")
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        if let Ok(status) = known {
            assert!(status.success(), "{commit} is not a commit here");
        }
    }

    // Plausible process numbers.
    let value = |name: &str| sample(&body, name).unwrap_or_else(|| panic!("no {name}"));
    let fds = value("process_open_fds");
    let max = value("process_max_fds");
    assert!(fds >= 3.0 && fds < max, "{fds} of {max}");
    let rss = value("process_resident_memory_bytes");
    assert!(
        rss > 1e6 && rss <= value("process_virtual_memory_bytes"),
        "{rss}"
    );
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 120.0,
        "{start} vs {now}"
    );

    // Each WebSocket the server holds is one more open file.
    const N: usize = 40;
    let mut conns = Vec::new();
    for _ in 0..N {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{public}/ws"))
            .await
            .expect("websocket");
        conns.push(ws);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let body = scrape(metrics).await;
        let open = sample(&body, "process_open_fds").expect("open fds");
        let connections = body
            .lines()
            .filter(|l| l.starts_with("push_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if connections == N as f64 && open >= fds + N as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "open fds {open} (before {fds}), connections {connections}, want +{N}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(conns);
}

#[tokio::test]
async fn metrics_listen_equal_to_listen_is_refused() {
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:9999",
            "--metrics-listen",
            "127.0.0.1:9999",
        ])
        .output()
        .expect("run push-server");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid setting metrics_listen: must differ from listen"),
        "{err}"
    );
}

/// `PUSH_REQUIRE_AUTH=true` without any key stops the start and names what
/// is missing; with a key from the environment the server serves.
#[tokio::test]
async fn require_auth_from_the_environment() {
    let port = free_port();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("PUSH_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("PUSH_LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let out = run(&[("PUSH_REQUIRE_AUTH", "true")])
        .output()
        .expect("run push-server");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [
        "require_auth",
        "PUSH_JWT_SECRET",
        "PUSH_JWT_PUBLIC_KEY",
        "PUSH_PUBLISH_KEY",
    ] {
        assert!(err.contains(name), "{name} not in: {err}");
    }

    let _server = Server(
        run(&[("PUSH_REQUIRE_AUTH", "true"), ("PUSH_PUBLISH_KEY", "k1")])
            .stderr(Stdio::null())
            .spawn()
            .expect("start push-server"),
    );
    assert_eq!(until_get(port, "/healthz").await.0, 200);
    // Publishing now needs the key.
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(
        b"POST /api/v1/channels/a/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    // The refused publish is counted under its code; an accepted one is not.
    let body = scrape(port).await;
    assert_eq!(
        sample(&body, "push_publish_errors_total{code=\"unauthorized\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample(&body, "push_messages_published_total"), Some(0.0));
}
