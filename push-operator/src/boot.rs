//! `push-operator redis-boot`: the init container of every Redis and
//! Sentinel pod. It observes the running pods and Sentinels, asks
//! [`topology::decide`] what this pod should be, and writes the config
//! fragment the main container includes:
//!
//! * a Redis pod gets `replicaof <master>` or nothing (master), or waits
//!   (polling, with a deadline) while the decision is `Wait`;
//! * a Sentinel pod gets a complete `sentinel.conf` monitoring the master
//!   the decision names.
//!
//! With a password (env `REDIS_PASSWORD`, read by `main`), a Redis fragment
//! also carries `requirepass` and `masterauth` (a master becomes a replica
//! after a failover and must then log in to the new master), and
//! `sentinel.conf` carries `requirepass` (clients and peer Sentinels log in
//! to this Sentinel), `sentinel sentinel-pass` (this Sentinel logs in to its
//! peers) and `sentinel auth-pass` (it logs in to the Redis pods). The
//! password goes only into these files, never to a log line or argv.

use std::path::Path;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::redis_probe::{self, Endpoints};
use crate::topology::{self, Observation, PodState, Role, Target};
use crate::{Error, Result};

/// How often a waiting boot step looks again.
pub const POLL: Duration = Duration::from_secs(2);

/// Whether a Redis data directory holds an earlier dataset (RDB or AOF).
pub fn data_present(dir: &Path) -> bool {
    let non_empty = |p: &Path| p.metadata().map(|m| m.len() > 0).unwrap_or(false);
    if non_empty(&dir.join("dump.rdb")) || non_empty(&dir.join("appendonly.aof")) {
        return true;
    }
    // Redis 7 keeps AOF in a directory of base + incremental files.
    std::fs::read_dir(dir.join("appendonlydir"))
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".base.") && non_empty(&e.path()))
        })
        .unwrap_or(false)
}

/// Quotes a value for a Redis/Sentinel config file: double quotes, with
/// `\\`, `"` and anything not printable ASCII escaped as Redis' config
/// parser (`sdssplitargs`) reads them, so a password with spaces, quotes or
/// newlines is one argument and cannot inject another directive.
pub fn conf_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for b in value.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b' '..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

fn password(pw: Option<&str>) -> Option<&str> {
    pw.filter(|p| !p.is_empty())
}

/// The config fragment for a Redis pod, or `None` to keep waiting.
pub fn redis_fragment(target: &Target, ep: &Endpoints) -> Option<String> {
    let mut conf = match target {
        Target::Master => "# master: decided by push-operator redis-boot\n".to_string(),
        Target::Follow(m) => {
            let addr = ep.pods.get(*m)?;
            let (host, port) = addr.rsplit_once(':')?;
            format!("replicaof {host} {port}\n")
        }
        Target::Wait(_) => return None,
    };
    if let Some(pw) = password(ep.password.as_deref()) {
        let pw = conf_quote(pw);
        conf.push_str(&format!("requirepass {pw}\nmasterauth {pw}\n"));
        if let Some(user) = ep.username.as_deref().filter(|u| !u.is_empty()) {
            conf.push_str(&format!("masteruser {}\n", conf_quote(user)));
        }
    }
    Some(conf)
}

/// Decides, waiting while the decision is `Wait`, until `deadline`.
pub async fn redis_boot(
    ep: &Endpoints,
    me: usize,
    has_data: bool,
    deadline: Instant,
) -> Result<String> {
    loop {
        let obs = redis_probe::observe(ep, Some((me, has_data))).await;
        let plan = topology::decide(&obs);
        let target = plan
            .targets
            .get(me)
            .cloned()
            .unwrap_or(Target::Wait("ordinal out of range"));
        if let Some(fragment) = redis_fragment(&target, ep) {
            tracing::info!(pod = me, ?target, summary = %plan.summary, "redis boot decision");
            return Ok(fragment);
        }
        tracing::info!(pod = me, ?target, summary = %plan.summary, "waiting");
        if Instant::now() + POLL > deadline {
            return Err(Error::Timeout(plan.summary));
        }
        sleep(POLL).await;
    }
}

/// Which pod a starting Sentinel should monitor: the decided master, else
/// the pod the decision would make master, else the master most replicas
/// still follow (Sentinel will then see it down and fail over, which is
/// how a pending failover completes after all Sentinels restarted), else 0.
pub fn sentinel_target(obs: &Observation) -> usize {
    let plan = topology::decide(obs);
    if let Some(m) = plan.master {
        return m;
    }
    if let Some(m) = plan.targets.iter().position(|t| *t == Target::Master) {
        return m;
    }
    let mut counts = vec![0usize; obs.pods.len()];
    for p in &obs.pods {
        if let PodState::Up(r) = p {
            if let Role::Replica {
                master: Some(m), ..
            } = r.role
            {
                if let Some(c) = counts.get_mut(m) {
                    *c += 1;
                }
            }
        }
    }
    counts
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        .filter(|(_, &c)| c > 0)
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Sentinel settings besides the monitored master.
#[derive(Clone)]
pub struct SentinelSettings {
    /// Sentinel port.
    pub port: u16,
    /// Address this Sentinel announces (its pod FQDN), if any.
    pub announce_host: Option<String>,
    /// Sentinels that must agree the master is down.
    pub quorum: usize,
    /// Milliseconds of silence before a Sentinel calls the master down.
    pub down_after_ms: u64,
    /// Milliseconds a failover may take before it is retried.
    pub failover_timeout_ms: u64,
    /// Password of the Redis pods and of every Sentinel (one Secret);
    /// `None` or empty: no auth.
    pub password: Option<String>,
}

// Hand-written so the password never reaches a log line.
impl std::fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("port", &self.port)
            .field("announce_host", &self.announce_host)
            .field("quorum", &self.quorum)
            .field("down_after_ms", &self.down_after_ms)
            .field("failover_timeout_ms", &self.failover_timeout_ms)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A complete sentinel.conf.
pub fn sentinel_conf(master_addr: &str, master_name: &str, s: &SentinelSettings) -> Result<String> {
    let (host, port) = master_addr
        .rsplit_once(':')
        .ok_or_else(|| Error::InvalidSpec(format!("master address {master_addr:?} has no port")))?;
    let mut conf = format!("port {}\n", s.port);
    // Pod IPs change on restart; hostnames are stable.
    conf.push_str("sentinel resolve-hostnames yes\nsentinel announce-hostnames yes\n");
    if let Some(h) = &s.announce_host {
        conf.push_str(&format!("sentinel announce-ip {h}\n"));
    }
    conf.push_str(&format!(
        "sentinel monitor {master_name} {host} {port} {q}\n\
         sentinel down-after-milliseconds {master_name} {d}\n\
         sentinel failover-timeout {master_name} {f}\n\
         sentinel parallel-syncs {master_name} 1\n",
        q = s.quorum,
        d = s.down_after_ms,
        f = s.failover_timeout_ms,
    ));
    if let Some(pw) = password(s.password.as_deref()) {
        let pw = conf_quote(pw);
        conf.push_str(&format!(
            "requirepass {pw}\nsentinel sentinel-pass {pw}\nsentinel auth-pass {master_name} {pw}\n"
        ));
    }
    Ok(conf)
}

/// Observes and writes a Sentinel's config.
pub async fn sentinel_boot(ep: &Endpoints, s: &SentinelSettings) -> Result<String> {
    let obs = redis_probe::observe(ep, None).await;
    let m = sentinel_target(&obs);
    let addr = ep
        .pods
        .get(m)
        .ok_or_else(|| Error::InvalidSpec(format!("no Redis pod {m}")))?;
    tracing::info!(master = %addr, "sentinel boot decision");
    sentinel_conf(addr, &ep.master_name, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Running;

    fn ep() -> Endpoints {
        Endpoints {
            pods: vec!["r-0.h:6379".into(), "r-1.h:6379".into()],
            sentinels: vec![],
            master_name: "push".into(),
            ..Endpoints::default()
        }
    }

    #[test]
    fn fragments() {
        assert_eq!(
            redis_fragment(&Target::Follow(1), &ep()).unwrap(),
            "replicaof r-1.h 6379\n"
        );
        assert!(redis_fragment(&Target::Master, &ep())
            .unwrap()
            .starts_with('#'));
        assert_eq!(redis_fragment(&Target::Wait("x"), &ep()), None);
    }

    #[test]
    fn sentinel_monitors_what_replicas_follow_when_master_is_gone() {
        let replica = |m| {
            PodState::Up(Running {
                role: Role::Replica {
                    master: Some(m),
                    link_up: false,
                },
                offset: 5,
                keys: 5,
            })
        };
        let obs = Observation {
            pods: vec![replica(2), replica(2), PodState::Down],
            sentinel_master: None,
            failover_in_progress: false,
        };
        assert_eq!(sentinel_target(&obs), 2);
        let fresh = Observation {
            pods: vec![PodState::Down; 3],
            sentinel_master: None,
            failover_in_progress: false,
        };
        assert_eq!(sentinel_target(&fresh), 0);
    }

    #[test]
    fn sentinel_conf_lines() {
        let conf = sentinel_conf(
            "r-0.h:6379",
            "push",
            &SentinelSettings {
                port: 26379,
                announce_host: Some("s-0.s".into()),
                quorum: 2,
                down_after_ms: 5000,
                failover_timeout_ms: 60000,
                password: None,
            },
        )
        .unwrap();
        assert!(conf.contains("sentinel monitor push r-0.h 6379 2\n"));
        assert!(conf.contains("sentinel announce-ip s-0.s\n"));
        assert!(conf.contains("sentinel down-after-milliseconds push 5000\n"));
        assert!(!conf.contains("pass"), "no auth lines without a password");
    }

    #[test]
    fn auth_lines_quoted_and_never_in_debug() {
        let settings = SentinelSettings {
            port: 26379,
            announce_host: None,
            quorum: 2,
            down_after_ms: 5000,
            failover_timeout_ms: 60000,
            password: Some("s3cr et\"\n".into()),
        };
        let conf = sentinel_conf("r-0.h:6379", "push", &settings).unwrap();
        let q = r#""s3cr et\"\x0a""#;
        assert!(conf.contains(&format!("requirepass {q}\n")), "{conf}");
        assert!(
            conf.contains(&format!("sentinel sentinel-pass {q}\n")),
            "{conf}"
        );
        assert!(
            conf.contains(&format!("sentinel auth-pass push {q}\n")),
            "{conf}"
        );
        assert_eq!(conf.lines().filter(|l| l.contains("s3cr")).count(), 3);
        assert!(!format!("{settings:?}").contains("s3cr"));

        let mut e = ep();
        e.password = Some("pw".into());
        let f = redis_fragment(&Target::Follow(1), &e).unwrap();
        assert_eq!(
            f,
            "replicaof r-1.h 6379\nrequirepass \"pw\"\nmasterauth \"pw\"\n"
        );
        let f = redis_fragment(&Target::Master, &e).unwrap();
        assert!(f.contains("requirepass \"pw\"\nmasterauth \"pw\"\n"), "{f}");
        assert!(!format!("{e:?}").contains("\"pw\""));
        e.password = Some(String::new());
        assert!(!redis_fragment(&Target::Master, &e)
            .unwrap()
            .contains("pass"));
    }

    #[test]
    fn detects_data() {
        let dir = std::env::temp_dir().join(format!("push-boot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("appendonlydir")).unwrap();
        assert!(!data_present(&dir));
        std::fs::write(
            dir.join("appendonlydir/appendonly.aof.1.base.rdb"),
            b"REDIS",
        )
        .unwrap();
        assert!(data_present(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
