//! `push-operator redis-boot`: the init container of every Redis and
//! Sentinel pod. It observes the running pods and Sentinels, asks
//! [`topology::decide`] what this pod should be, and writes the config
//! fragment the main container includes:
//!
//! * a Redis pod gets `replicaof <master>` or nothing (master), or waits
//!   (polling, with a deadline) while the decision is `Wait`;
//! * a Sentinel pod gets a complete `sentinel.conf` monitoring the master
//!   the decision names.

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

/// The config fragment for a Redis pod, or `None` to keep waiting.
pub fn redis_fragment(target: &Target, ep: &Endpoints) -> Option<String> {
    match target {
        Target::Master => Some("# master: decided by push-operator redis-boot\n".into()),
        Target::Follow(m) => {
            let addr = ep.pods.get(*m)?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(format!("replicaof {host} {port}\n"))
        }
        Target::Wait(_) => None,
    }
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
#[derive(Clone, Debug)]
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
        };
        assert_eq!(sentinel_target(&obs), 2);
        let fresh = Observation {
            pods: vec![PodState::Down; 3],
            sentinel_master: None,
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
            },
        )
        .unwrap();
        assert!(conf.contains("sentinel monitor push r-0.h 6379 2\n"));
        assert!(conf.contains("sentinel announce-ip s-0.s\n"));
        assert!(conf.contains("sentinel down-after-milliseconds push 5000\n"));
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
