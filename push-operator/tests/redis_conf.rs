//! The Redis Cluster node config and its `auth` init script, run for real:
//! the script as `sh` runs it in the init container, the config loaded by a
//! real redis-server (skipped when redis-server is not installed; `make
//! test-operator` installs it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use push_operator::objects::redis::{cluster_conf, CLUSTER_AUTH_SCRIPT};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(host: &str, port: u16, password: Option<&str>) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", host, "-p", &port.to_string(), "ping"]);
    cmd.env_remove("REDISCLI_AUTH");
    if let Some(p) = password {
        cmd.env("REDISCLI_AUTH", p);
    }
    let out = cmd.output().expect("redis-cli runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cluster_node_requires_the_password_the_init_script_wrote() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-server not installed; skipped");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let boot = tmp.path().join("boot");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&boot).expect("boot dir");
    std::fs::create_dir_all(&data).expect("data dir");
    // Quotes, a backslash, a dollar and a space: what a user's Secret may hold.
    let password = r#"pa"ss\wo$rd x"#;

    let script = CLUSTER_AUTH_SCRIPT.replace("/boot/", &format!("{}/", boot.display()));
    let status = Command::new("sh")
        .args(["-c", &script])
        .env("REDIS_PASSWORD", password)
        .status()
        .expect("sh runs");
    assert!(status.success(), "auth init script failed");
    let auth = boot.join("auth.conf");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&auth)
            .expect("auth.conf written")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "auth.conf readable by the Redis user only");

    let port = TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = cluster_conf(false)
        .replace("port 6379", &format!("port {port}"))
        .replace("/boot/auth.conf", &auth.display().to_string())
        .replace("/data", &data.display().to_string());
    assert!(!conf.contains("protected-mode no"));
    let conf_path = tmp.path().join("redis.conf");
    std::fs::write(&conf_path, conf).expect("write conf");
    let _server = Server(
        Command::new("redis-server")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts"),
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut without = cli("127.0.0.1", port, None);
    while !without.contains("NOAUTH") {
        assert!(
            Instant::now() < deadline,
            "redis-server never answered: {without}"
        );
        std::thread::sleep(Duration::from_millis(100));
        without = cli("127.0.0.1", port, None);
    }
    assert!(cli("127.0.0.1", port, Some(password)).contains("PONG"));
    assert!(cli("127.0.0.1", port, Some("wrong")).contains("WRONGPASS"));

    // protected-mode stays yes: with a password set it does not refuse a
    // client on a non-loopback address (what pods are to each other).
    if let Some(ip) = non_loopback_ipv4() {
        let remote = cli(&ip, port, Some(password));
        assert!(remote.contains("PONG"), "from {ip}: {remote}");
        assert!(cli(&ip, port, None).contains("NOAUTH"));
    } else {
        eprintln!("no non-loopback IPv4 address; remote check skipped");
    }
}

/// This machine's first non-loopback IPv4 address (a UDP "connect" sends
/// nothing; it only picks the source address).
fn non_loopback_ipv4() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}
