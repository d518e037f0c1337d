//! Real Redis processes for the tests: a single server, master + replica +
//! 3 Sentinels, a 3-master Cluster, each on free loopback ports in a
//! directory of its own, killed when dropped. Also included by the
//! reliability test binary (`#[path]`), which needs `crate::common::WAIT`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::common::WAIT;

/// A free loopback port (bound then released; good enough on a test box).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "push-redis-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `redis-cli -p port args…` and returns its output.
pub async fn cli(port: u16, args: &[&str]) -> String {
    cli_auth(port, None, args).await
}

/// [`cli`] with a password (in `REDISCLI_AUTH`, never on the command line).
pub async fn cli_auth(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-p").arg(port.to_string()).args(args);
    if let Some(p) = password {
        cmd.env("REDISCLI_AUTH", p);
    }
    let out = cmd.output().await.expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `f` until it returns true, failing after `within`.
pub async fn until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One redis-server (or redis-sentinel) process.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    sentinel: bool,
    /// `requirepass` of this process, if any.
    pub password: Option<String>,
}

impl Redis {
    /// Starts redis-server with `extra` arguments and waits for PONG.
    pub async fn start(extra: &[&str]) -> Redis {
        Redis::start_with_password(extra, None).await
    }

    /// Starts redis-server with `requirepass` and `masterauth` set to
    /// `password` (when given) and `extra` arguments.
    pub async fn start_with_password(extra: &[&str], password: Option<&str>) -> Redis {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(p) = password {
            args.extend(["--requirepass", p, "--masterauth", p].map(String::from));
        }
        let mut r = Redis {
            port: free_port(),
            dir: scratch_dir(),
            args,
            child: None,
            sentinel: false,
            password: password.map(String::from),
        };
        r.spawn().await;
        r
    }

    /// Starts a Sentinel watching `master_port` as `mymaster`.
    pub async fn sentinel(master_port: u16) -> Redis {
        Redis::sentinel_with_password(master_port, None).await
    }

    /// A Sentinel with `requirepass` and `sentinel auth-pass` for the data
    /// nodes set to `password`.
    pub async fn sentinel_with_password(master_port: u16, password: Option<&str>) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: scratch_dir(),
            args: Vec::new(),
            child: None,
            sentinel: true,
            password: password.map(String::from),
        };
        let mut conf = format!(
            "port {}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds mymaster 3000\nsentinel failover-timeout mymaster 10000\n\
             sentinel parallel-syncs mymaster 1\n",
            r.port,
            r.dir.display()
        );
        if let Some(p) = password {
            conf.push_str(&format!(
                "requirepass {p}\nsentinel auth-pass mymaster {p}\n"
            ));
        }
        std::fs::write(r.dir.join("sentinel.conf"), conf).expect("sentinel.conf");
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let mut cmd = if self.sentinel {
            let mut c = Command::new("redis-server");
            c.arg(self.dir.join("sentinel.conf")).arg("--sentinel");
            c
        } else {
            let mut c = Command::new("redis-server");
            c.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .args(&self.args);
            c
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (make test-redis installs it)");
        self.child = Some(child);
        let port = self.port;
        let password = self.password.clone();
        until("redis answers PING", WAIT, || {
            let password = password.clone();
            async move { cli_auth(port, password.as_deref(), &["PING"]).await == "PONG" }
        })
        .await;
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("redis-server running")
    }

    /// SIGKILL: no goodbye to clients.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, directory and arguments.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Master + replica + 3 Sentinels (`mymaster`).
pub struct SentinelSet {
    pub master: Redis,
    pub replica: Redis,
    pub sentinels: Vec<Redis>,
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        SentinelSet::start_with_password(None).await
    }

    /// Every data node and Sentinel with `requirepass` (`password`), the
    /// data nodes also with `masterauth`, the Sentinels with `auth-pass`.
    pub async fn start_with_password(password: Option<&str>) -> SentinelSet {
        let master = Redis::start_with_password(&[], password).await;
        let mport = master.port.to_string();
        let replica =
            Redis::start_with_password(&["--replicaof", "127.0.0.1", &mport], password).await;
        let rport = replica.port;
        until("replica in sync", WAIT, || async move {
            cli_auth(rport, password, &["INFO", "replication"])
                .await
                .contains("master_link_status:up")
        })
        .await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(Redis::sentinel_with_password(master.port, password).await);
        }
        // Every Sentinel must know the replica and the others before a
        // failover can be agreed.
        for s in &sentinels {
            let port = s.port;
            until("sentinel sees replica and peers", WAIT, || async move {
                let info = cli_auth(port, password, &["SENTINEL", "MASTER", "mymaster"]).await;
                let field = |name: &str| {
                    let lines: Vec<&str> = info.lines().collect();
                    lines
                        .iter()
                        .position(|l| *l == name)
                        .and_then(|i| lines.get(i + 1))
                        .map(|v| v.to_string())
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            })
            .await;
        }
        SentinelSet {
            master,
            replica,
            sentinels,
        }
    }

    /// Kills the master and waits until the first Sentinel names another.
    pub async fn kill_master_and_await_promotion(&mut self) {
        let old = self.master.port.to_string();
        self.master.kill().await;
        self.await_master(
            "sentinel promotes the replica",
            Duration::from_secs(30),
            |addr| !addr.is_empty() && !addr.contains(&old),
        )
        .await;
    }

    /// Waits until the first Sentinel's answer to `get-master-addr-by-name`
    /// satisfies `named`.
    pub async fn await_master(&self, what: &str, within: Duration, named: impl Fn(&str) -> bool) {
        let sentinel = self.sentinels[0].port;
        let password = self.sentinels[0].password.as_deref();
        let named = &named;
        until(what, within, || async move {
            named(
                &cli_auth(
                    sentinel,
                    password,
                    &["SENTINEL", "get-master-addr-by-name", "mymaster"],
                )
                .await,
            )
        })
        .await;
    }

    pub fn sentinel_addrs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| s.addr())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A 3-master Redis Cluster (no replicas).
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::start_with_password(None).await
    }

    /// Every node with `requirepass` and `masterauth` (`password`).
    pub async fn start_with_password(password: Option<&str>) -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                Redis::start_with_password(
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    password,
                )
                .await,
            );
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create").args(&addrs).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        if let Some(p) = password {
            create.env("REDISCLI_AUTH", p);
        }
        let out = create.output().await.expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            let port = n.port;
            until("cluster state ok", WAIT, || async move {
                cli_auth(port, password, &["CLUSTER", "INFO"])
                    .await
                    .contains("cluster_state:ok")
            })
            .await;
        }
        Cluster { nodes }
    }

    pub fn addrs(&self) -> String {
        self.nodes
            .iter()
            .map(|s| s.addr())
            .collect::<Vec<_>>()
            .join(",")
    }
}
