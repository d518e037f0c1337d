//! Talking to Redis and Sentinel: a minimal RESP client (the operator sends
//! a handful of commands, not worth a client library), `observe` which turns
//! `INFO`/`SENTINEL` answers into a [`topology::Observation`], and `execute`
//! which carries out a [`topology::Action`].
//!
//! Every network call has a timeout: an unreachable pod is an observation
//! (`Down`), never a hung reconcile.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::topology::{Action, Observation, PodState, Role, Running};
use crate::{Error, Result};

/// Per-command budget: connect + write + read.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }
}

fn redis_err(addr: &str, message: impl Into<String>) -> Error {
    Error::Redis {
        addr: addr.to_string(),
        message: message.into(),
    }
}

/// Sends one command on a fresh connection and reads one reply.
pub async fn call(addr: &str, args: &[&str]) -> Result<Reply> {
    timeout(CALL_TIMEOUT, call_inner(addr, args))
        .await
        .map_err(|_| redis_err(addr, "timed out"))?
}

async fn call_inner(addr: &str, args: &[&str]) -> Result<Reply> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| redis_err(addr, e.to_string()))?;
    let mut stream = BufReader::new(stream);
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    stream
        .get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| redis_err(addr, e.to_string()))?;
    read_reply(&mut stream, addr).await
}

fn read_reply<'a>(
    r: &'a mut BufReader<TcpStream>,
    addr: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        r.read_line(&mut line)
            .await
            .map_err(|e| redis_err(addr, e.to_string()))?;
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(line.len().min(1));
        let num = || {
            rest.parse::<i64>()
                .map_err(|_| redis_err(addr, format!("bad reply line {line:?}")))
        };
        match kind {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => Ok(Reply::Int(num()?)),
            "$" => {
                let n = num()?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)
                    .await
                    .map_err(|e| redis_err(addr, e.to_string()))?;
                buf.truncate(n as usize);
                Ok(Reply::Bulk(Some(
                    String::from_utf8_lossy(&buf).into_owned(),
                )))
            }
            "*" => {
                let n = num()?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r, addr).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(redis_err(addr, format!("unexpected reply {line:?}"))),
        }
    })
}

/// Normalizes `host:port` for comparison (case, trailing dot of FQDNs).
fn norm(host: &str, port: &str) -> String {
    format!(
        "{}:{}",
        host.trim_end_matches('.').to_ascii_lowercase(),
        port
    )
}

fn ordinal_of(addrs: &[String], host: &str, port: &str) -> Option<usize> {
    let want = norm(host, port);
    addrs.iter().position(|a| match a.rsplit_once(':') {
        Some((h, p)) => norm(h, p) == want,
        None => false,
    })
}

/// Parses `INFO replication` + key count into a [`Running`].
pub fn parse_info(info: &str, keys: u64, pod_addrs: &[String]) -> Running {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
    };
    let offset = field("master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let role = match field("role") {
        Some("slave") => Role::Replica {
            master: match (field("master_host"), field("master_port")) {
                (Some(h), Some(p)) => ordinal_of(pod_addrs, h, p),
                _ => None,
            },
            link_up: field("master_link_status") == Some("up"),
        },
        _ => Role::Master,
    };
    Running { role, offset, keys }
}

/// Observes one pod: `Down` if it does not answer.
pub async fn observe_pod(addr: &str, pod_addrs: &[String]) -> PodState {
    let info = match call(addr, &["INFO", "replication"]).await {
        Ok(r) => match r.text() {
            Some(t) => t.to_string(),
            None => return PodState::Down,
        },
        Err(_) => return PodState::Down,
    };
    let keys = match call(addr, &["DBSIZE"]).await {
        Ok(Reply::Int(n)) => n.max(0) as u64,
        _ => return PodState::Down,
    };
    PodState::Up(parse_info(&info, keys, pod_addrs))
}

/// The master a quorum of the configured Sentinels names, as an ordinal.
pub async fn sentinel_master(
    sentinel_addrs: &[String],
    master_name: &str,
    pod_addrs: &[String],
) -> Option<usize> {
    let quorum = sentinel_addrs.len() / 2 + 1;
    let mut votes = vec![0usize; pod_addrs.len()];
    for s in sentinel_addrs {
        if let Ok(Reply::Array(Some(items))) =
            call(s, &["SENTINEL", "get-master-addr-by-name", master_name]).await
        {
            if let (Some(h), Some(p)) = (
                items.first().and_then(Reply::text),
                items.get(1).and_then(Reply::text),
            ) {
                if let Some(i) = ordinal_of(pod_addrs, h, p) {
                    votes[i] += 1;
                }
            }
        }
    }
    votes.iter().position(|&v| v >= quorum)
}

/// Where to find the Redis pods and Sentinels, and how to log in.
///
/// One password (and optional ACL username) serves the Redis pods and the
/// Sentinels alike: the operator configures Sentinel's `requirepass` with
/// the same Secret (docs/security.md).
#[derive(Clone, Default)]
pub struct Endpoints {
    /// `host:port` of each Redis pod, by ordinal.
    pub pods: Vec<String>,
    /// `host:port` of each Sentinel.
    pub sentinels: Vec<String>,
    /// Sentinel's name of the master group.
    pub master_name: String,
    /// `AUTH` password; `None` (or empty) sends no `AUTH`.
    pub password: Option<String>,
    /// ACL username for `AUTH`; `None` is the `default` user.
    pub username: Option<String>,
    /// TLS (`rediss`) to pods and Sentinels; `None` is plain TCP.
    pub tls: Option<Tls>,
}

/// TLS settings for [`Endpoints`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM file of the CA certificates to trust instead of the system roots
    /// (as push-server's `redis_ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
}

// Hand-written so the password never reaches a log line.
impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("pods", &self.pods)
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Observes everything. `booting` marks the calling pod (the boot step) as
/// `Booting` instead of probing it.
pub async fn observe(ep: &Endpoints, booting: Option<(usize, bool)>) -> Observation {
    let mut pods = Vec::with_capacity(ep.pods.len());
    for (i, addr) in ep.pods.iter().enumerate() {
        pods.push(match booting {
            Some((me, has_data)) if me == i => PodState::Booting { has_data },
            _ => observe_pod(addr, &ep.pods).await,
        });
    }
    let sentinel_master = sentinel_master(&ep.sentinels, &ep.master_name, &ep.pods).await;
    Observation {
        pods,
        sentinel_master,
    }
}

/// Carries out one action.
pub async fn execute(ep: &Endpoints, action: &Action) -> Result<()> {
    match action {
        Action::ReplicaOf { pod, master } => {
            let (Some(addr), Some(target)) = (ep.pods.get(*pod), ep.pods.get(*master)) else {
                return Err(redis_err("-", format!("no pod {pod} or {master}")));
            };
            let (host, port) = target
                .rsplit_once(':')
                .ok_or_else(|| redis_err(target, "no port"))?;
            expect_ok(addr, call(addr, &["REPLICAOF", host, port]).await?)
        }
        Action::SentinelFailover => {
            let mut last = redis_err("-", "no Sentinel configured");
            for s in &ep.sentinels {
                match call(s, &["SENTINEL", "FAILOVER", &ep.master_name]).await {
                    Ok(reply) => return expect_ok(s, reply),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

fn expect_ok(addr: &str, reply: Reply) -> Result<()> {
    match reply {
        Reply::Simple(_) => Ok(()),
        other => Err(redis_err(addr, format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replica_info() {
        let pods = vec![
            "redis-0.h.ns.svc.cluster.local:6379".to_string(),
            "redis-1.h:6379".into(),
        ];
        let info = "# Replication\r\nrole:slave\r\nmaster_host:Redis-0.h.ns.svc.cluster.local.\r\nmaster_port:6379\r\nmaster_link_status:down\r\nmaster_repl_offset:42\r\n";
        let r = parse_info(info, 3, &pods);
        assert_eq!(
            r.role,
            Role::Replica {
                master: Some(0),
                link_up: false
            }
        );
        assert_eq!((r.offset, r.keys), (42, 3));
        let m = parse_info("role:master\r\nmaster_repl_offset:7\r\n", 0, &pods);
        assert_eq!(m.role, Role::Master);
        let stranger = parse_info(
            "role:slave\r\nmaster_host:10.0.0.9\r\nmaster_port:6379\r\n",
            0,
            &pods,
        );
        assert_eq!(
            stranger.role,
            Role::Replica {
                master: None,
                link_up: false
            }
        );
    }
}
