//! `rediss://`: a Redis that only speaks TLS, with a throwaway CA made by the
//! `openssl` CLI; Push trusts it through `--redis-ca-file`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use push_server::{Config, Server};
use tokio::process::{Child, Command};

use crate::common::{client, start, ws_subscribed, WAIT};
use crate::nodes::{failed_publish, node, try_publish, ws_messages};
use crate::procs::{free_port, until};

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "push-redis-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<ca>.crt`/`<ca>.key`) in `dir`.
async fn make_ca(dir: &Path, ca: &str) {
    let (crt, key) = (format!("{ca}.crt"), format!("{ca}.key"));
    let subj = format!("/CN=push test {ca}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", &key, "-out",
            &crt, "-subj", &subj,
        ],
    )
    .await;
}

/// `ca.crt` and `server.crt`/`server.key` signed by it for 127.0.0.1 and
/// localhost, plus `other.crt`, a CA that signed nothing here.
async fn make_certs(dir: &Path) {
    make_ca(dir, "ca").await;
    make_ca(dir, "other").await;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    )
    .await;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    )
    .await;
}

/// A redis-server that only listens on a TLS port.
struct TlsRedis {
    port: u16,
    dir: TempDir,
    _child: Child,
}

impl TlsRedis {
    async fn start() -> TlsRedis {
        let dir = TempDir::new("tls");
        make_certs(&dir.0).await;
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &dir.file("server.crt")])
            .args(["--tls-key-file", &dir.file("server.key")])
            .args(["--tls-ca-cert-file", &dir.file("ca.crt")])
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs");
        let ca = dir.file("ca.crt");
        until("redis answers PING over TLS", WAIT, || {
            let ca = ca.clone();
            async move {
                let out = Command::new("redis-cli")
                    .args(["--tls", "--cacert", &ca, "-p", &port.to_string(), "PING"])
                    .output()
                    .await
                    .expect("redis-cli runs");
                String::from_utf8_lossy(&out.stdout).trim() == "PONG"
            }
        })
        .await;
        TlsRedis {
            port,
            dir,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

#[tokio::test]
async fn two_nodes_over_tls_share_ids() {
    let redis = TlsRedis::start().await;
    let (url, ca) = (redis.url(), redis.dir.file("ca.crt"));
    let a = node(&["--redis-url", &url, "--redis-ca-file", &ca]).await;
    let b = node(&["--redis-url", &url, "--redis-ca-file", &ca]).await;

    let mut ws = ws_subscribed(&a, "tls").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            try_publish(&b, "tls", &format!(r#"{{"n":{i}}}"#))
                .await
                .expect("publish over TLS"),
        );
    }
    let got = ws_messages(&mut ws, 3).await;
    let got_ids: Vec<String> = got.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(got_ids, ids);
    assert_eq!(got[2].2["n"], 2);
}

/// An untrusted server certificate is an outage, as an unreachable Redis
/// is: the node starts, `/readyz` stays 503, publishes get 503
/// `broker_unavailable` naming the certificate problem.
#[tokio::test]
async fn untrusted_certificate_is_an_outage() {
    let redis = TlsRedis::start().await;
    let url = redis.url();
    let other = redis.dir.file("other.crt");
    for args in [
        // The system roots do not know the test CA.
        vec!["--redis-url", &url],
        // A CA file of another CA.
        vec!["--redis-url", &url, "--redis-ca-file", &other],
    ] {
        let s = start(&args).await;
        let (status, code, message) = failed_publish(&s, "tls").await;
        assert_eq!(
            (status, code.as_str()),
            (503, "broker_unavailable"),
            "{args:?}"
        );
        assert!(
            message.contains("certificate") && message.contains("UnknownIssuer"),
            "{args:?}: {message}"
        );
        // Still not ready after several health checks (every 500 ms).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
        while tokio::time::Instant::now() < deadline {
            let ready = client()
                .get(s.http("/readyz"))
                .send()
                .await
                .expect("readyz");
            assert_eq!(ready.status(), 503, "{args:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A CA file that cannot be read or holds no certificate stops the start.
#[tokio::test]
async fn unusable_ca_file_stops_startup() {
    let dir = TempDir::new("ca");
    let junk = dir.file("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let missing = dir.file("missing.pem");
    for (file, want) in [
        (&junk, "no usable PEM certificate"),
        (&missing, "cannot read"),
    ] {
        let config = Config::load_from([
            "push-server",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "rediss://127.0.0.1:1",
            "--redis-ca-file",
            file,
        ])
        .expect("config");
        let err = Server::start(config)
            .await
            .err()
            .expect("start must fail")
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}
