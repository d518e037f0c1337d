//! Talking to Redis and Sentinel with the `redis` crate: `observe` turns
//! `INFO`/`SENTINEL` answers into a [`topology::Observation`] and `execute`
//! carries out a [`topology::Action`]. `AUTH` (password, optional ACL user)
//! and TLS (`rediss`, optional CA file) come from [`Endpoints`].
//!
//! Every network call has a timeout and pods and Sentinels are asked at the
//! same time: an unreachable pod is an observation (`Down`) after one
//! timeout, never a hung reconcile nor one timeout per pod.

use std::time::Duration;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, Value};
use tokio::time::timeout;

use crate::topology::{Action, Observation, PodState, Role, Running};
use crate::{Error, Result};

/// Connecting (TCP, TLS handshake, `AUTH`) gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One command's reply gives up after this long.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Budget for everything asked of one pod or Sentinel in one observation.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

fn redis_err(addr: &str, message: impl Into<String>) -> Error {
    Error::Redis {
        addr: addr.to_string(),
        message: message.into(),
    }
}

/// How to reach `addr` (`host:port`) with the credentials and TLS settings
/// of `ep`.
fn connection_info(ep: &Endpoints, addr: &str) -> Result<ConnectionInfo> {
    let scheme = if ep.tls.is_some() { "rediss" } else { "redis" };
    let info = format!("{scheme}://{addr}")
        .as_str()
        .into_connection_info()
        .map_err(|e| redis_err(addr, format!("invalid address: {e}")))?;
    let mut settings = info.redis_settings().clone();
    if let Some(pw) = ep.password.as_deref().filter(|p| !p.is_empty()) {
        settings = settings.set_password(pw);
        if let Some(user) = ep.username.as_deref().filter(|u| !u.is_empty()) {
            settings = settings.set_username(user);
        }
    }
    Ok(info.set_redis_settings(settings))
}

fn client(ep: &Endpoints, addr: &str) -> Result<Client> {
    let info = connection_info(ep, addr)?;
    match ep.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        None => Client::open(info).map_err(|e| redis_err(addr, e.to_string())),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                redis_err(addr, format!("cannot read CA file {}: {e}", path.display()))
            })?;
            // rustls would accept a file without certificates and then trust
            // nothing; say what is wrong instead of a handshake error.
            if !pem
                .windows(b"-----BEGIN CERTIFICATE-----".len())
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(redis_err(
                    addr,
                    format!("CA file {} holds no PEM certificate", path.display()),
                ));
            }
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(|e| redis_err(addr, format!("CA file {}: {e}", path.display())))
        }
    }
}

/// A connection to `addr`, logged in.
pub async fn connect(ep: &Endpoints, addr: &str) -> Result<MultiplexedConnection> {
    install_crypto_provider();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client(ep, addr)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| redis_err(addr, e.to_string()))
}

/// rustls needs one process-wide crypto provider; kube and push-server use
/// ring, so does this (a second call is a no-op).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends one command on a fresh connection and returns the reply (a Redis
/// error reply is an `Err`).
pub async fn call(ep: &Endpoints, addr: &str, args: &[&str]) -> Result<Value> {
    timeout(CALL_TIMEOUT, async {
        let mut conn = connect(ep, addr).await?;
        query(&mut conn, addr, args).await
    })
    .await
    .map_err(|_| redis_err(addr, "timed out"))?
}

async fn query(conn: &mut MultiplexedConnection, addr: &str, args: &[&str]) -> Result<Value> {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    cmd.query_async(conn)
        .await
        .map_err(|e| redis_err(addr, e.to_string()))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::SimpleString(s) => Some(s.clone()),
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
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

/// Probes one pod: its role, offset and key count, or why it cannot be asked
/// (unreachable, `NOAUTH`/`WRONGPASS`, TLS, timeout).
pub async fn probe_pod(ep: &Endpoints, addr: &str) -> Result<Running> {
    timeout(CALL_TIMEOUT, async {
        let mut conn = connect(ep, addr).await?;
        let info = query(&mut conn, addr, &["INFO", "replication"]).await?;
        let info = text(&info).ok_or_else(|| redis_err(addr, "INFO reply is not text"))?;
        let keys = match query(&mut conn, addr, &["DBSIZE"]).await? {
            Value::Int(n) => n.max(0) as u64,
            other => return Err(redis_err(addr, format!("DBSIZE replied {other:?}"))),
        };
        Ok(parse_info(&info, keys, &ep.pods))
    })
    .await
    .map_err(|_| redis_err(addr, "timed out"))?
}

/// Observes one pod: `Down` if it cannot be asked (the reason is logged).
pub async fn observe_pod(ep: &Endpoints, addr: &str) -> PodState {
    match probe_pod(ep, addr).await {
        Ok(r) => PodState::Up(r),
        Err(e) => {
            // A wrong password or certificate is a misconfiguration that
            // will not heal by itself: say so where it is seen.
            if is_misconfiguration(&e) {
                tracing::warn!(error = %e, "redis pod refused the probe");
            } else {
                tracing::debug!(error = %e, "redis pod not observed");
            }
            PodState::Down
        }
    }
}

/// Whether a probe failed on credentials or TLS rather than reachability.
pub fn is_misconfiguration(e: &Error) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    [
        "noauth",
        "wrongpass",
        "authentication",
        "certificate",
        "ca file",
        "tls",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// What one Sentinel says about the group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// The master it names, as an ordinal (`None`: it does not monitor the
    /// group, or names an address that is not one of our pods).
    pub master: Option<usize>,
    /// `failover_in_progress` is among the master's flags.
    pub failing_over: bool,
}

/// Asks one Sentinel for the master's address and its flags (one connection,
/// two commands).
pub async fn sentinel_opinion(ep: &Endpoints, addr: &str) -> Result<SentinelView> {
    timeout(CALL_TIMEOUT, async {
        let mut conn = connect(ep, addr).await?;
        let name = ep.master_name.as_str();
        let reply = query(
            &mut conn,
            addr,
            &["SENTINEL", "get-master-addr-by-name", name],
        )
        .await?;
        let master = match reply {
            Value::Array(items) => {
                match (items.first().and_then(text), items.get(1).and_then(text)) {
                    (Some(h), Some(p)) => ordinal_of(&ep.pods, &h, &p),
                    _ => None,
                }
            }
            _ => None,
        };
        if master.is_none() {
            return Ok(SentinelView::default());
        }
        let flags = query(&mut conn, addr, &["SENTINEL", "MASTER", name]).await?;
        Ok(SentinelView {
            master,
            failing_over: failing_over(&flags),
        })
    })
    .await
    .map_err(|_| redis_err(addr, "timed out"))?
}

/// Whether `failover_in_progress` is among the `flags` of a `SENTINEL
/// MASTER` reply (a flat field/value list on RESP2, a map on RESP3).
fn failing_over(reply: &Value) -> bool {
    let flags = match reply {
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| kv.first().and_then(text).as_deref() == Some("flags"))
            .and_then(|kv| kv.get(1).and_then(text)),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some("flags"))
            .and_then(|(_, v)| text(v)),
        _ => None,
    };
    flags.is_some_and(|f| f.split(',').any(|f| f == "failover_in_progress"))
}

/// What the configured Sentinels say, all asked at once: the master a
/// quorum of them names, as an ordinal, and whether any reachable one is
/// failing over.
pub async fn sentinel_master(ep: &Endpoints) -> (Option<usize>, bool) {
    let quorum = ep.sentinels.len() / 2 + 1;
    let mut votes = vec![0usize; ep.pods.len()];
    let mut failing_over = false;
    let opinions = join_all(ep.sentinels.iter().map(|s| sentinel_opinion(ep, s))).await;
    for (s, o) in ep.sentinels.iter().zip(opinions) {
        match o {
            Ok(view) => {
                failing_over |= view.failing_over;
                if let Some(i) = view.master {
                    votes[i] += 1;
                }
            }
            Err(e) => tracing::debug!(sentinel = %s, error = %e, "sentinel not observed"),
        }
    }
    (votes.iter().position(|&v| v >= quorum), failing_over)
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

/// Observes everything, every pod and Sentinel at the same time. `booting`
/// marks the calling pod (the boot step) as `Booting` instead of probing it.
pub async fn observe(ep: &Endpoints, booting: Option<(usize, bool)>) -> Observation {
    let pods = join_all(ep.pods.iter().enumerate().map(|(i, addr)| async move {
        match booting {
            Some((me, has_data)) if me == i => PodState::Booting { has_data },
            _ => observe_pod(ep, addr).await,
        }
    }));
    // Pods first, Sentinels after: a replica Sentinel promotes reports role
    // master only once the failover has begun, and the flag stays set until
    // it ends, so a "stray master" seen here is always seen with the flag.
    let pods = pods.await;
    let (sentinel_master, failover_in_progress) = sentinel_master(ep).await;
    Observation {
        pods,
        sentinel_master,
        failover_in_progress,
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
            expect_ok(addr, call(ep, addr, &["REPLICAOF", host, port]).await?)
        }
        Action::SentinelFailover => {
            // One Sentinel starts the failover; the first that answers.
            let mut last = redis_err("-", "no Sentinel configured");
            for s in &ep.sentinels {
                match call(ep, s, &["SENTINEL", "FAILOVER", &ep.master_name]).await {
                    Ok(reply) => return expect_ok(s, reply),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

fn expect_ok(addr: &str, reply: Value) -> Result<()> {
    match reply {
        Value::Okay | Value::SimpleString(_) => Ok(()),
        other => Err(redis_err(addr, format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_failover_in_progress_from_sentinel_master() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = |flags: &str| {
            Value::Array(vec![
                bulk("name"),
                bulk("push"),
                bulk("flags"),
                bulk(flags),
                bulk("num-slaves"),
                bulk("2"),
            ])
        };
        assert!(failing_over(&resp2("master,failover_in_progress")));
        assert!(!failing_over(&resp2("master")));
        assert!(!failing_over(&resp2("master,s_down,o_down")));
        let resp3 = Value::Map(vec![
            (bulk("name"), bulk("push")),
            (bulk("flags"), bulk("master,o_down,failover_in_progress")),
        ]);
        assert!(failing_over(&resp3));
        assert!(!failing_over(&Value::Nil));
    }

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
