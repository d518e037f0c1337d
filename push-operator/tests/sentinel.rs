//! The topology decision against real `redis-server` and `redis-sentinel`
//! processes on loopback, all with a password (`requirepass`, Sentinel
//! auth) as the operator deploys them: bootstrap from the boot step's
//! decision, kill the master, restart it empty, and check that no data is
//! lost and the master ends up where Sentinel put it; then a `SENTINEL
//! FAILOVER` during which the operator's plan changes nothing.
//!
//! Each process logs to a file in the test's temp dir; when the test fails
//! the tail of every log is printed (look for `+tilt`, `-failover-abort-*`).
//!
//! Needs `redis-server` and `redis-sentinel` on PATH (`make test-operator`
//! installs them). Without them the test fails with a message saying so,
//! rather than passing silently.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use push_operator::boot::{self, SentinelSettings};
use push_operator::redis_probe::{self, Endpoints};
use push_operator::topology::{self, Action, PodState, Role, Target};
use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

/// Upper bound for anything we wait for (generous: CI machines are slow and
/// shared). Failover with a 3 s down-after takes a few seconds; a Sentinel
/// that enters TILT (its timer starved for > 2 s) stays passive for 30 s.
const DEADLINE: Duration = Duration::from_secs(120);

/// The password of every Redis and Sentinel here; with a space and a quote,
/// so the boot step's config quoting is exercised too.
const PASSWORD: &str = "test pass\"word";

mod procs;
use procs::{free_ports, require, tempdir};

/// Children are killed when the test ends, pass or fail.
struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.start_kill();
        }
    }
}

/// Standard output and error of a process, appended to `log`.
fn log_to(log: &Path) -> (Stdio, Stdio) {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    let g = f.try_clone().expect("clone log");
    (f.into(), g.into())
}

/// Starts redis-server on a config made of the base settings and the boot
/// step's fragment, as the pod's main container includes it.
fn start_redis(port: u16, dir: &Path, fragment: &str, logs: &Path) -> Child {
    let conf = dir.join("redis.conf");
    let base = format!(
        "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n",
        dir.display()
    );
    std::fs::write(&conf, base + fragment).expect("write redis.conf");
    let (out, err) = log_to(&logs.join(format!("redis-{port}.log")));
    Command::new("redis-server")
        .arg(&conf)
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-server")
}

fn start_sentinel(conf: &Path, logs: &Path, i: usize) -> Child {
    let (out, err) = log_to(&logs.join(format!("sentinel-{i}.log")));
    Command::new("redis-sentinel")
        .arg(conf)
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-sentinel")
}

/// On a failing test, prints the tail of every process log.
struct LogsOnPanic(PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        let mut entries: Vec<_> = std::fs::read_dir(&self.0)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        let mut tilts = 0;
        for p in &entries {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            tilts += text.matches("+tilt").count();
            if std::thread::panicking() {
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("==> {} (last 40 lines)", p.display());
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
        }
        eprintln!("sentinel +tilt events: {tilts}");
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Length of an array reply of a Sentinel command, if it answers.
async fn sentinel_count(ep: &Endpoints, addr: &str, what: &str) -> Option<usize> {
    match redis_probe::call(ep, addr, &["SENTINEL", what, &ep.master_name]).await {
        Ok(redis::Value::Array(items)) => Some(items.len()),
        _ => None,
    }
}

/// Polls `check` until it returns `Some`, or panics at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

async fn dbsize(ep: &Endpoints, addr: &str) -> Option<u64> {
    match redis_probe::call(ep, addr, &["DBSIZE"]).await {
        Ok(redis::Value::Int(n)) => Some(n as u64),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_empty_restart_against_real_sentinel_with_auth() {
    require("redis-server");
    require("redis-sentinel");
    const KEYS: u64 = 50;
    let all_ports = free_ports(6);
    let (ports, sentinel_ports) = (all_ports[..3].to_vec(), all_ports[3..].to_vec());
    let ep = Endpoints {
        pods: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        sentinels: sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect(),
        master_name: "push".into(),
        password: Some(PASSWORD.into()),
        ..Endpoints::default()
    };
    let logs = tempdir("logs");
    let _logs = LogsOnPanic(logs.clone());
    let dirs: Vec<PathBuf> = (0..3).map(|i| tempdir(&format!("redis{i}"))).collect();
    let mut procs = Procs(Vec::new());

    // Bootstrap: every pod asks the decision how to start, as the init
    // container does. Nothing runs yet, so pod 0 is master by the ordinal rule.
    let far = Instant::now() + DEADLINE;
    let mut fragments = Vec::new();
    for i in 0..3 {
        fragments.push(
            boot::redis_boot(&ep, i, false, far)
                .await
                .expect("boot decision"),
        );
    }
    assert!(
        fragments[0].starts_with('#'),
        "pod 0 starts as master: {}",
        fragments[0]
    );
    assert!(
        fragments[1].starts_with(&format!("replicaof 127.0.0.1 {}\n", ports[0])),
        "{}",
        fragments[1]
    );
    for i in 0..3 {
        procs
            .0
            .push(Some(start_redis(ports[i], &dirs[i], &fragments[i], &logs)));
    }

    // Sentinels, configured by the same boot step.
    let sentinel_dir = tempdir("sentinel");
    for (i, port) in sentinel_ports.iter().enumerate() {
        let conf = boot::sentinel_boot(
            &ep,
            &SentinelSettings {
                port: *port,
                announce_host: None,
                quorum: 2,
                down_after_ms: 3000,
                failover_timeout_ms: 10000,
                password: Some(PASSWORD.into()),
            },
        )
        .await
        .expect("sentinel conf");
        assert!(
            conf.contains(&format!("sentinel monitor push 127.0.0.1 {} 2", ports[0])),
            "{conf}"
        );
        let path = sentinel_dir.join(format!("sentinel-{i}.conf"));
        // Loopback only, like the Redis processes: a wildcard bind of a
        // port free on 127.0.0.1 can collide with a connection's local port
        // on another address (it did while the e2e cluster ran).
        std::fs::write(&path, format!("bind 127.0.0.1\n{conf}")).expect("write sentinel conf");
        procs.0.push(Some(start_sentinel(&path, &logs, i)));
    }

    // Without the password, Redis refuses: the auth lines took effect.
    let master = ep.pods[0].clone();
    eventually("master up", || async { dbsize(&ep, &master).await }).await;
    let anonymous = Endpoints {
        password: None,
        ..ep.clone()
    };
    let refused = redis_probe::call(&anonymous, &master, &["DBSIZE"]).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("NOAUTH")),
        "{refused:?}"
    );
    let refused = redis_probe::call(&anonymous, &ep.sentinels[0], &["PING"]).await;
    assert!(refused.is_err(), "Sentinel answers without the password");

    // Data on the master, replicated to both replicas.
    for k in 0..KEYS {
        let key = format!("k{k}");
        redis_probe::call(&ep, &master, &["SET", &key, "v"])
            .await
            .expect("SET");
    }
    for addr in &ep.pods[1..] {
        eventually("replica catches up", || async {
            dbsize(&ep, addr).await.filter(|&n| n == KEYS)
        })
        .await;
    }
    // A Sentinel can fail over only once it knows the replicas (from the
    // master's INFO, every 10 s) and enough peers for a quorum (from hello
    // messages through the monitored pods). Killing the master before that
    // leaves Sentinels that never fail over: wait for it, as an operator
    // would before calling the group healthy.
    let waited = Instant::now();
    for s in &ep.sentinels {
        eventually("Sentinel knows both replicas and both peers", || async {
            let replicas = sentinel_count(&ep, s, "replicas").await?;
            let peers = sentinel_count(&ep, s, "sentinels").await?;
            (replicas == 2 && peers == 2).then_some(())
        })
        .await;
    }
    eprintln!(
        "Sentinels knew the replicas and their peers {:?} after the data was replicated",
        waited.elapsed()
    );
    let plan = eventually("Sentinels agree on pod 0", || async {
        let obs = redis_probe::observe(&ep, None).await;
        (obs.sentinel_master == Some(0)).then(|| topology::decide(&obs))
    })
    .await;
    assert_eq!(plan.master, Some(0));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);

    // Kill the master. Its volume is gone too (no persistence here): it will
    // come back empty.
    if let Some(mut c) = procs.0[0].take() {
        c.kill().await.expect("kill master");
    }
    let _ = std::fs::remove_dir_all(&dirs[0]);
    std::fs::create_dir_all(&dirs[0]).expect("recreate dir");

    // Restarting it now would make it an empty master that both replicas
    // resync from. The boot decision must say wait while Sentinel still
    // names pod 0. (Sentinel needs down-after + election time to move, so
    // right after the kill it still names pod 0.)
    let obs = redis_probe::observe(&ep, Some((0, false))).await;
    assert_eq!(
        obs.sentinel_master,
        Some(0),
        "Sentinel has not failed over yet"
    );
    let plan = topology::decide(&obs);
    assert!(
        matches!(plan.targets[0], Target::Wait(_)),
        "{:?} ({})",
        plan.targets[0],
        plan.summary
    );
    assert_eq!(
        plan.master, None,
        "no master label while the failover is pending"
    );

    // The boot step waits for the failover, then joins as a replica of the
    // pod Sentinel promoted.
    let fragment = boot::redis_boot(&ep, 0, false, Instant::now() + DEADLINE)
        .await
        .expect("boot decision after failover");
    let obs = redis_probe::observe(&ep, None).await;
    let new_master = obs.sentinel_master.expect("Sentinel named a new master");
    assert_ne!(new_master, 0, "Sentinel promoted a replica");
    assert!(
        fragment.starts_with(&format!("replicaof 127.0.0.1 {}\n", ports[new_master])),
        "{fragment}"
    );
    assert!(fragment.contains("masterauth "), "{fragment}");
    procs.0[0] = Some(start_redis(ports[0], &dirs[0], &fragment, &logs));

    // No data lost anywhere; the restarted pod resynced from the new master.
    for addr in &ep.pods {
        eventually("all pods hold the data", || async {
            dbsize(&ep, addr).await.filter(|&n| n == KEYS)
        })
        .await;
    }
    let plan = eventually("topology settles", || async {
        let obs = redis_probe::observe(&ep, None).await;
        let plan = topology::decide(&obs);
        let settled = obs.sentinel_master == Some(new_master)
            && matches!(obs.pods[0], PodState::Up(ref r) if r.role == Role::Replica { master: Some(new_master), link_up: true })
            && plan.actions.is_empty();
        settled.then_some(plan)
    })
    .await;
    assert_eq!(
        plan.master,
        Some(new_master),
        "label target is Sentinel's new master"
    );
    assert_eq!(plan.targets[0], Target::Follow(new_master));

    // A failover in flight: the replica Sentinel promotes reports role
    // master before Sentinel names it. While a Sentinel reports the
    // failover, the operator must send nothing (a REPLICAOF to the pod being
    // promoted aborted a failover on the e2e cluster).
    let before = new_master;
    redis_probe::execute(&ep, &Action::SentinelFailover)
        .await
        .expect("SENTINEL FAILOVER");
    let mut saw_flag = false;
    let deadline = Instant::now() + DEADLINE;
    let promoted = loop {
        assert!(Instant::now() < deadline, "the failover did not end");
        let obs = redis_probe::observe(&ep, None).await;
        let plan = topology::decide(&obs);
        if obs.failover_in_progress {
            saw_flag = true;
            assert!(
                plan.actions.is_empty(),
                "{:?} during a failover ({})",
                plan.actions,
                plan.summary
            );
        }
        match obs.sentinel_master {
            Some(m) if m != before && !obs.failover_in_progress => break m,
            _ => sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(
        saw_flag,
        "failover_in_progress was never read from the Sentinels"
    );
    eprintln!("SENTINEL FAILOVER moved the master from pod {before} to pod {promoted}");

    for d in dirs.iter().chain([&sentinel_dir]) {
        let _ = std::fs::remove_dir_all(d);
    }
}
