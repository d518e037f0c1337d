//! The operator's Redis probe against real `redis-server` processes: a
//! password (`requirepass`), TLS (`rediss` with a throwaway CA made by
//! `openssl`), and hostile or silent peers (a tiny fake TCP server) that
//! must neither make the probe allocate what they announce nor hang it.
//!
//! Needs `redis-server` (built with TLS, as Debian's is) and `openssl` on
//! PATH; without them the tests fail with a message saying so.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use push_operator::redis_probe::{self, Endpoints, Tls};
use push_operator::topology::{PodState, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

mod procs;
use procs::{free_port, require, tempdir};

const DEADLINE: Duration = Duration::from_secs(30);

/// redis-server on `conf` (a file: the password never goes on a command
/// line, as in the pods).
fn start_redis(dir: &Path, conf: &str) -> Child {
    let path = dir.join("redis.conf");
    std::fs::write(&path, conf).expect("write redis.conf");
    Command::new("redis-server")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-server")
}

fn endpoints(addr: &str) -> Endpoints {
    Endpoints {
        pods: vec![addr.to_string()],
        master_name: "push".into(),
        ..Endpoints::default()
    }
}

/// Probes until the pod answers (it is starting), or panics at the deadline.
async fn until_up(ep: &Endpoints, addr: &str) -> push_operator::topology::Running {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match redis_probe::probe_pod(ep, addr).await {
            Ok(r) => return r,
            Err(e) => assert!(Instant::now() < deadline, "{addr} never answered: {e}"),
        }
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn password_is_sent_and_a_missing_one_is_a_clear_error() {
    require("redis-server");
    let port = free_port();
    let dir = tempdir("auth");
    let _redis = start_redis(
        &dir,
        &format!("port {port}\nbind 127.0.0.1\nsave \"\"\nrequirepass \"s3cret pw\"\n"),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut ep = endpoints(&addr);
    ep.password = Some("s3cret pw".into());
    let running = until_up(&ep, &addr).await;
    assert_eq!(running.role, Role::Master);
    redis_probe::call(&ep, &addr, &["SET", "k", "v"])
        .await
        .expect("SET with the password");
    assert_eq!(until_up(&ep, &addr).await.keys, 1);

    // No password: an error naming the cause, quickly, not Down-after-a-hang.
    let anonymous = endpoints(&addr);
    let started = Instant::now();
    let err = redis_probe::probe_pod(&anonymous, &addr)
        .await
        .expect_err("Redis requires a password");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    assert!(redis_probe::is_misconfiguration(&err), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        redis_probe::observe_pod(&anonymous, &addr).await,
        PodState::Down
    );

    // A wrong password is refused as such.
    let mut wrong = endpoints(&addr);
    wrong.password = Some("nope".into());
    let err = redis_probe::probe_pod(&wrong, &addr)
        .await
        .expect_err("wrong password");
    assert!(
        err.to_string().to_ascii_lowercase().contains("pass"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    require("redis-server");
    require("openssl");
    let dir = tempdir("tls");
    // A throwaway CA and a server certificate for 127.0.0.1 signed by it.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=push test CA",
        ],
    );
    openssl(
        &dir,
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
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(
        &dir,
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
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );

    let port = free_port();
    let _redis = start_redis(
        &dir,
        &format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\n\
             tls-cert-file {d}/server.crt\ntls-key-file {d}/server.key\n\
             tls-ca-cert-file {d}/ca.crt\ntls-auth-clients no\nrequirepass pw\n",
            d = dir.display()
        ),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut ep = endpoints(&addr);
    ep.password = Some("pw".into());
    ep.tls = Some(Tls {
        ca_file: Some(dir.join("ca.crt")),
    });
    let running = until_up(&ep, &addr).await;
    assert_eq!(running.role, Role::Master);

    // Plain TCP to the TLS port, or TLS without trusting the CA: refused.
    let plain = Endpoints {
        tls: None,
        ..ep.clone()
    };
    assert!(redis_probe::probe_pod(&plain, &addr).await.is_err());
    let system_roots = Endpoints {
        tls: Some(Tls::default()),
        ..ep.clone()
    };
    let err = redis_probe::probe_pod(&system_roots, &addr)
        .await
        .expect_err("the private CA is not a system root");
    assert!(
        err.to_string().to_ascii_lowercase().contains("cert"),
        "{err}"
    );
    // A CA file without a certificate is named as the problem.
    std::fs::write(dir.join("empty.pem"), "").expect("write");
    let bad_ca = Endpoints {
        tls: Some(Tls {
            ca_file: Some(dir.join("empty.pem")),
        }),
        ..ep.clone()
    };
    let err = redis_probe::probe_pod(&bad_ca, &addr)
        .await
        .expect_err("no CA");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake peer: every connection gets `reply` once, then silence (the
/// connection stays open). Returns its address.
async fn fake_peer(reply: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut sent = false;
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !sent {
                        sent = true;
                        if sock.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Peak virtual memory of this process (`VmPeak`), in KiB.
fn vm_peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("read /proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmPeak")
}

#[tokio::test]
async fn announced_huge_lengths_are_not_allocated() {
    // 1 TiB bulk string, and an array of 2^40 elements: the old client
    // allocated either up front (and aborted the process).
    for reply in [&b"$1099511627776\r\n"[..], &b"*1099511627776\r\n"[..]] {
        let addr = fake_peer(reply).await;
        let ep = endpoints(&addr);
        let before = vm_peak_kib();
        let started = Instant::now();
        let err = redis_probe::probe_pod(&ep, &addr)
            .await
            .expect_err("a peer that never completes its reply");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        let grown_mib = (vm_peak_kib() - before) / 1024;
        assert!(
            grown_mib < 1024,
            "probe grew peak memory by {grown_mib} MiB for {:?}",
            String::from_utf8_lossy(reply)
        );
        assert_eq!(redis_probe::observe_pod(&ep, &addr).await, PodState::Down);
    }
}

#[tokio::test]
async fn silent_pods_and_sentinels_are_probed_at_the_same_time() {
    // Peers that accept and never answer: each costs one timeout. Asked one
    // after another, 3 pods + 3 Sentinels would take >= 6 timeouts.
    let mut pods = Vec::new();
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        pods.push(fake_peer(b"").await);
        sentinels.push(fake_peer(b"").await);
    }
    let ep = Endpoints {
        pods,
        sentinels,
        master_name: "push".into(),
        ..Endpoints::default()
    };
    let started = Instant::now();
    let obs = redis_probe::observe(&ep, None).await;
    let took = started.elapsed();
    assert_eq!(obs.pods, vec![PodState::Down; 3]);
    assert_eq!(obs.sentinel_master, None);
    // One probe is bounded by 4 s; six in a row would be >= 12 s.
    assert!(took < Duration::from_secs(6), "observe took {took:?}");
}
