//! Where Redis is and how to reach it: one URL, a master found through
//! Sentinel, or a Cluster. Commands go over one shared multiplexed
//! connection (or the cluster client, which keeps one per node); it is
//! dropped on any connection-level error and rebuilt by the next caller, so a
//! restarted Redis or a new Sentinel master is picked up without a restart.

use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, ProtocolVersion, RedisError, RedisFuture, Value,
};
use tokio::sync::Mutex;

use crate::broker::BrokerError;

/// Connecting to one Redis gives up after this long: a publish during an
/// outage must fail fast instead of hanging.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// A command (publish script, read, subscribe) gives up after this long.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(2000);
/// After a failed connect, callers fail at once for this long instead of each
/// trying again: an outage costs one connect attempt per period, not one per
/// request.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Why the Redis settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid Redis address {addr:?}: {source}")]
    Address { addr: String, source: RedisError },
    #[error("--redis-sentinel needs --redis-master-name")]
    NoMasterName,
    #[error("cannot read --redis-ca-file {path:?}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("--redis-ca-file {path:?} holds no usable PEM certificate{detail}")]
    CaPem {
        path: std::path::PathBuf,
        detail: String,
    },
}

/// How this node finds Redis.
#[derive(Clone)]
pub enum Target {
    /// One Redis (`--redis-url`).
    Single(ConnectionInfo),
    /// The master that the Sentinels name; `template` carries the password
    /// and TLS settings of `--redis-url`, if given.
    Sentinel {
        sentinels: Vec<ConnectionInfo>,
        master: String,
        template: Option<ConnectionInfo>,
    },
    /// A Redis Cluster reached through its seed nodes, and the CA
    /// certificates (PEM) trusted for TLS instead of the system roots.
    Cluster(Vec<ConnectionInfo>, Option<Vec<u8>>),
}

/// `host:port` or a full `redis://…` / `rediss://…` URL.
pub fn parse_addr(addr: &str) -> Result<ConnectionInfo, TargetError> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("redis://{addr}")
    };
    url.as_str()
        .into_connection_info()
        .map_err(|source| TargetError::Address {
            addr: redact(addr),
            source,
        })
}

/// `redis://user:pw@host` → `redis://***@host`: a refused URL is printed at
/// start, its password must not be.
fn redact(addr: &str) -> String {
    match (addr.find("://"), addr.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &addr[..scheme + 3], &addr[at..])
        }
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn refused_urls_hide_their_password() {
        let err = super::parse_addr("redis://:s3cret@host:notaport").err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("redis://***@host") && !text.contains("s3cret"),
            "{text}"
        );
        assert_eq!(super::redact("127.0.0.1:6379"), "127.0.0.1:6379");
    }
}

/// Reads `--redis-ca-file` and checks that it holds certificates.
fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, TargetError> {
    let pem = std::fs::read(path).map_err(|source| TargetError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    // redis-rs would accept a file without certificates and then trust
    // nothing; say so at startup instead.
    let has_cert = pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----");
    if !has_cert {
        return Err(TargetError::CaPem {
            path: path.to_path_buf(),
            detail: String::new(),
        });
    }
    Ok(pem)
}

/// For a `rediss://` address, trusts `ca` (instead of the system roots).
fn with_ca(
    info: ConnectionInfo,
    ca: Option<&[u8]>,
    path: Option<&std::path::Path>,
) -> Result<ConnectionInfo, TargetError> {
    let (Some(ca), Some(path)) = (ca, path) else {
        return Ok(info);
    };
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Ok(info);
    }
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    };
    Client::build_with_tls(info, certs)
        .map(|c| c.get_connection_info().clone())
        .map_err(|e| TargetError::CaPem {
            path: path.to_path_buf(),
            detail: format!(": {e}"),
        })
}

/// `redis_password` / `redis_sentinel_password` (docs/operations.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct Passwords<'a> {
    /// AUTH for the master, replicas and Cluster nodes.
    pub redis: Option<&'a str>,
    /// AUTH for the Sentinels; `None`: the same as `redis`.
    pub sentinel: Option<&'a str>,
}

/// Sets the AUTH password of `info` when one is given: a password setting
/// wins over one in the URL (`redis://:pw@…`), which is kept otherwise.
fn with_password(info: ConnectionInfo, password: Option<&str>) -> ConnectionInfo {
    match password {
        Some(p) => {
            let settings = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(settings)
        }
        None => info,
    }
}

impl Target {
    /// Builds the target from the settings (one of them is set). `ca_file`
    /// (PEM) replaces the system roots for every `rediss://` address.
    pub fn from_config(
        url: Option<&str>,
        sentinel: &[String],
        master_name: Option<&str>,
        cluster: &[String],
        ca_file: Option<&std::path::Path>,
        passwords: Passwords<'_>,
    ) -> Result<Target, TargetError> {
        let ca = ca_file.map(read_ca).transpose()?;
        let parse = |addr: &str| with_ca(parse_addr(addr)?, ca.as_deref(), ca_file);
        if !cluster.is_empty() {
            let nodes = cluster
                .iter()
                .map(|a| Ok(with_password(parse_addr(a)?, passwords.redis)))
                .collect::<Result<_, TargetError>>()?;
            return Ok(Target::Cluster(nodes, ca));
        }
        if !sentinel.is_empty() {
            let master = master_name.ok_or(TargetError::NoMasterName)?.to_string();
            let sentinel_password = passwords.sentinel.or(passwords.redis);
            let sentinels = sentinel
                .iter()
                .map(|a| Ok(with_password(parse(a)?, sentinel_password)))
                .collect::<Result<_, TargetError>>()?;
            // The master Sentinel names gets the URL's TLS settings and the
            // password (the setting's, else the URL's).
            let template = match (url.map(parse).transpose()?, passwords.redis) {
                (Some(t), p) => Some(with_password(t, p)),
                (None, Some(p)) => Some(with_password(parse_addr("127.0.0.1:6379")?, Some(p))),
                (None, None) => None,
            };
            return Ok(Target::Sentinel {
                sentinels,
                master,
                template,
            });
        }
        let url = url.unwrap_or("redis://127.0.0.1:6379");
        Ok(Target::Single(with_password(parse(url)?, passwords.redis)))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(..))
    }

    /// Where the master is now (not for clusters).
    pub async fn master(&self) -> Result<ConnectionInfo, BrokerError> {
        match self {
            Target::Single(info) => Ok(info.clone()),
            Target::Sentinel {
                sentinels,
                master,
                template,
            } => resolve_sentinel(sentinels, master, template.as_ref()).await,
            Target::Cluster(..) => Err(unavailable("no single master in cluster mode")),
        }
    }

    /// A multiplexed connection to the master, optionally RESP3 with a push
    /// sender (the pub/sub connection).
    pub async fn connect_master(
        &self,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<MultiplexedConnection, BrokerError> {
        let mut info = self.master().await?;
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        if let Some(tx) = push {
            let settings = info.redis_settings().clone();
            info = info.set_redis_settings(settings.set_protocol(ProtocolVersion::RESP3));
            config = config.set_push_sender(tx);
        }
        let client = Client::open(info).map_err(redis_err)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(redis_err)?;
        if matches!(self, Target::Sentinel { .. }) {
            // Sentinel may still name the old master for a moment after it
            // was demoted: only a master is accepted.
            let role: Vec<Value> = redis::cmd("ROLE")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let is_master = matches!(role.first(), Some(Value::BulkString(b)) if b == b"master");
            if !is_master {
                return Err(unavailable("the address Sentinel gave is not a master"));
            }
        }
        Ok(conn)
    }

    /// A cluster client connection, optionally RESP3 with a push sender.
    pub async fn connect_cluster(
        &self,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<ClusterConnection, BrokerError> {
        let Target::Cluster(nodes, ca) = self else {
            return Err(unavailable("not a cluster"));
        };
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            // Retries hide a failing node from the caller for a while; a
            // publish should fail fast and be retried by the publisher.
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(200);
        if let Some(password) = nodes.first().and_then(|n| n.redis_settings().password()) {
            builder = builder.password(password);
        }
        let tls = matches!(
            nodes.first().map(|n| n.addr()),
            Some(ConnectionAddr::TcpTls { .. })
        );
        if let (true, Some(ca)) = (tls, ca) {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        if let Some(tx) = push {
            builder = builder.use_protocol(ProtocolVersion::RESP3).push_sender(tx);
        }
        let client = builder.build().map_err(redis_err)?;
        tokio::time::timeout(CONNECT_TIMEOUT * 3, client.get_async_connection())
            .await
            .map_err(|_| unavailable("timed out connecting to the cluster"))?
            .map_err(redis_err)
    }
}

/// Asks each Sentinel in turn where the master is.
async fn resolve_sentinel(
    sentinels: &[ConnectionInfo],
    master: &str,
    template: Option<&ConnectionInfo>,
) -> Result<ConnectionInfo, BrokerError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT / 2))
        .set_response_timeout(Some(CONNECT_TIMEOUT / 2));
    let mut last_error = String::from("no sentinel configured");
    for sentinel in sentinels {
        let attempt = async {
            let client = Client::open(sentinel.clone())?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match attempt.await {
            Ok(Some((host, port))) => {
                let info = match template {
                    Some(t) => {
                        let addr = match t.addr() {
                            ConnectionAddr::TcpTls {
                                insecure,
                                tls_params,
                                ..
                            } => ConnectionAddr::TcpTls {
                                host,
                                port,
                                insecure: *insecure,
                                tls_params: tls_params.clone(),
                            },
                            _ => ConnectionAddr::Tcp(host, port),
                        };
                        t.clone().set_addr(addr)
                    }
                    None => ConnectionAddr::Tcp(host, port)
                        .into_connection_info()
                        .map_err(redis_err)?,
                };
                return Ok(info);
            }
            Ok(None) => last_error = format!("sentinel knows no master named {master:?}"),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(unavailable(format!(
        "no sentinel named a master: {last_error}"
    )))
}

pub fn unavailable(msg: impl Into<String>) -> BrokerError {
    BrokerError::Unavailable(msg.into())
}

pub fn redis_err(e: RedisError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// Whether an error means the connection (or the master behind it) is gone,
/// rather than that one command failed.
pub fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        // A demoted master answers writes with READONLY: find the new one.
        || e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
}

/// A command connection: to the master, or to the cluster.
#[derive(Clone)]
pub enum Conn {
    Direct(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The shared command connection, rebuilt after connection errors.
pub struct Commands {
    target: Target,
    /// The current connection; `None` after an error until the next caller
    /// reconnects.
    current: StdMutex<Option<Conn>>,
    /// Held while connecting, so that one caller connects while the others
    /// wait for its result instead of stampeding.
    connecting: Mutex<()>,
    /// When the last connect attempt failed (see [`RETRY_AFTER`]).
    failed_at: StdMutex<Option<(Instant, BrokerError)>>,
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a plain assignment: poison carries no risk.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Commands {
    pub fn new(target: Target) -> Commands {
        Commands {
            target,
            current: StdMutex::new(None),
            connecting: Mutex::new(()),
            failed_at: StdMutex::new(None),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The current connection, connecting if there is none.
    pub async fn get(&self) -> Result<Conn, BrokerError> {
        if let Some(conn) = &*lock(&self.current) {
            return Ok(conn.clone());
        }
        if let Some((at, err)) = &*lock(&self.failed_at) {
            if at.elapsed() < RETRY_AFTER {
                return Err(err.clone());
            }
        }
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = &*lock(&self.current) {
            return Ok(conn.clone());
        }
        if let Some((at, err)) = &*lock(&self.failed_at) {
            if at.elapsed() < RETRY_AFTER {
                return Err(err.clone());
            }
        }
        let connected = match &self.target {
            Target::Cluster(..) => self.target.connect_cluster(None).await.map(Conn::Cluster),
            _ => self.target.connect_master(None).await.map(Conn::Direct),
        };
        match connected {
            Ok(conn) => {
                *lock(&self.failed_at) = None;
                *lock(&self.current) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                *lock(&self.failed_at) = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Forgets the connection after a connection-level error, so that the
    /// next caller reconnects (and, with Sentinel, asks for the master).
    /// The cluster client reconnects its nodes by itself and is kept.
    pub fn reset(&self) {
        let mut current = lock(&self.current);
        if matches!(&*current, Some(Conn::Direct(_))) {
            *current = None;
        }
    }

    /// Runs `f` on the connection with the response timeout; connection
    /// errors reset it.
    pub fn run<'a, T, F>(&'a self, f: F) -> BoxFuture<'a, Result<T, BrokerError>>
    where
        T: Send + 'a,
        F: FnOnce(Conn) -> BoxFuture<'static, Result<T, RedisError>> + Send + 'a,
    {
        async move {
            let conn = self.get().await?;
            match tokio::time::timeout(RESPONSE_TIMEOUT, f(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    if is_connection_error(&e) {
                        self.reset();
                    }
                    Err(redis_err(e))
                }
                Err(_) => {
                    self.reset();
                    Err(unavailable("Redis did not answer in time"))
                }
            }
        }
        .boxed()
    }
}
