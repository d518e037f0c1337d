//! Settings (docs/operations.md): one name used three ways — flag `--max-connections`,
//! variable `PUSH_MAX_CONNECTIONS`, YAML key `max_connections` in `--config`.
//!
//! Precedence: flag > environment > YAML file > default. The YAML file is
//! applied by feeding its keys back to clap as flags for every setting that
//! clap left at its default, so all three sources share one parser and one
//! set of error messages.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use push_config as pc;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A duration setting that may be turned off (`off`, `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptDuration(pub Option<Duration>);

/// The duration grammar lives in push-config, shared with the operator.
pub use push_config::parse_duration;

fn parse_opt_duration(s: &str) -> Result<OptDuration, push_config::DurationError> {
    push_config::parse_off_duration(s).map(OptDuration)
}

/// push-server: real-time push messaging over WebSocket and Server-Sent Events.
///
/// Every setting can be given as a flag, as a PUSH_* environment variable or
/// as a key of the YAML file named by --config (flag > env > file > default).
/// Durations are written 500ms, 1s, 5m; a bare number means seconds.
#[derive(Debug, Clone, Parser)]
#[command(name = "push-server", version, about, long_about = None, max_term_width = 100)]
pub struct Config {
    /// YAML file of settings; keys are the setting names (e.g. max_connections)
    #[arg(long = pc::CONFIG.flag, env = pc::CONFIG.env, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the public HTTP port (WebSocket, SSE, API; metrics too unless
    /// --metrics-listen is set)
    #[arg(long = pc::LISTEN.flag, env = pc::LISTEN.env, default_value = pc::LISTEN.default)]
    pub listen: SocketAddr,

    /// Address of a separate metrics port; when set, /metrics is served there
    /// only and the public port answers 404 for it
    #[arg(long = pc::METRICS_LISTEN.flag, env = pc::METRICS_LISTEN.env)]
    pub metrics_listen: Option<SocketAddr>,

    /// WebSocket Ping interval
    #[arg(long = pc::HEARTBEAT.flag, env = pc::HEARTBEAT.env,
          default_value = pc::HEARTBEAT.default, value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Close a WebSocket that sent no frame or Pong for this long
    #[arg(long = pc::IDLE_TIMEOUT.flag, env = pc::IDLE_TIMEOUT.env,
          default_value = pc::IDLE_TIMEOUT.default, value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Interval of the `: ping` comment on SSE streams
    #[arg(long = pc::SSE_HEARTBEAT.flag, env = pc::SSE_HEARTBEAT.env,
          default_value = pc::SSE_HEARTBEAT.default, value_parser = parse_duration)]
    pub sse_heartbeat: Duration,

    /// Most WebSocket + SSE connections this node accepts (then 503 + Retry-After)
    #[arg(long = pc::MAX_CONNECTIONS.flag, env = pc::MAX_CONNECTIONS.env,
          default_value = pc::MAX_CONNECTIONS.default)]
    pub max_connections: usize,

    /// Most subscriptions one connection may hold
    #[arg(long = pc::MAX_CHANNELS_PER_CONNECTION.flag, env = pc::MAX_CHANNELS_PER_CONNECTION.env,
          default_value = pc::MAX_CHANNELS_PER_CONNECTION.default)]
    pub max_channels_per_connection: usize,

    /// Largest published message body in bytes (larger: 413)
    #[arg(long = pc::MAX_MESSAGE_BYTES.flag, env = pc::MAX_MESSAGE_BYTES.env,
          default_value = pc::MAX_MESSAGE_BYTES.default)]
    pub max_message_bytes: usize,

    /// Messages queued per connection before it is a slow consumer
    #[arg(long = pc::OUTBOUND_QUEUE.flag, env = pc::OUTBOUND_QUEUE.env,
          default_value = pc::OUTBOUND_QUEUE.default)]
    pub outbound_queue: usize,

    /// Messages retained per channel for resume (0: no history, pure pub/sub)
    #[arg(long = pc::HISTORY_SIZE.flag, env = pc::HISTORY_SIZE.env,
          default_value = pc::HISTORY_SIZE.default)]
    pub history_size: usize,

    /// How long a message stays in history (0: no history)
    #[arg(long = pc::HISTORY_TTL.flag, env = pc::HISTORY_TTL.env,
          default_value = pc::HISTORY_TTL.default, value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Redelivery delay of an unacknowledged message (subscriptions with ack:true)
    #[arg(long = pc::ACK_TIMEOUT.flag, env = pc::ACK_TIMEOUT.env,
          default_value = pc::ACK_TIMEOUT.default, value_parser = parse_duration)]
    pub ack_timeout: Duration,

    /// Redeliveries of one unacknowledged message before giving up
    #[arg(long = pc::MAX_REDELIVERIES.flag, env = pc::MAX_REDELIVERIES.env,
          default_value = pc::MAX_REDELIVERIES.default)]
    pub max_redeliveries: u32,

    /// Unacknowledged messages in flight per subscription
    #[arg(long = pc::ACK_WINDOW.flag, env = pc::ACK_WINDOW.env,
          default_value = pc::ACK_WINDOW.default)]
    pub ack_window: usize,

    /// On SIGTERM, spread `reconnect` over this period, then exit
    #[arg(long = pc::DRAIN_PERIOD.flag, env = pc::DRAIN_PERIOD.env,
          default_value = pc::DRAIN_PERIOD.default, value_parser = parse_duration)]
    pub drain_period: Duration,

    /// Ask clients to reconnect after this long (± 10 % jitter); off by default
    #[arg(long = pc::MAX_CONNECTION_LIFETIME.flag, env = pc::MAX_CONNECTION_LIFETIME.env,
          default_value = pc::MAX_CONNECTION_LIFETIME.default, value_parser = parse_opt_duration)]
    pub max_connection_lifetime: OptDuration,

    /// Hold a connection's first queued message this long so that the
    /// messages behind it go out in the same write (less CPU, more latency);
    /// off by default
    #[arg(long = pc::WRITE_DELAY.flag, env = pc::WRITE_DELAY.env,
          default_value = pc::WRITE_DELAY.default, value_parser = parse_opt_duration)]
    pub write_delay: OptDuration,

    /// Most WebSocket + SSE connections from one client IP (0: no limit; then 429)
    #[arg(long = pc::MAX_CONNECTIONS_PER_IP.flag, env = pc::MAX_CONNECTIONS_PER_IP.env,
          default_value = pc::MAX_CONNECTIONS_PER_IP.default)]
    pub max_connections_per_ip: usize,

    /// WebSocket publish frames per second per connection (0: no limit)
    #[arg(long = pc::PUBLISH_RATE_LIMIT.flag, env = pc::PUBLISH_RATE_LIMIT.env,
          default_value = pc::PUBLISH_RATE_LIMIT.default)]
    pub publish_rate_limit: u32,

    /// HS256 secret that turns JWT auth on
    #[arg(long = pc::JWT_SECRET.flag, env = pc::JWT_SECRET.env,
          hide_env_values = pc::JWT_SECRET.secret)]
    pub jwt_secret: Option<String>,

    /// RS256/ES256 public key that turns JWT auth on: a PEM file, or the PEM text itself
    #[arg(long = pc::JWT_PUBLIC_KEY.flag, env = pc::JWT_PUBLIC_KEY.env, value_name = "PEM_FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Static bearer keys allowed to publish (comma-separated)
    #[arg(long = pc::PUBLISH_KEY.flag, env = pc::PUBLISH_KEY.env, value_delimiter = ',',
          hide_env_values = pc::PUBLISH_KEY.secret)]
    pub publish_key: Vec<String>,

    /// Refuse to start unless a JWT secret, a JWT public key or a publish key
    /// is set (what Kubernetes deployments use; without it no key means open)
    #[arg(long = pc::REQUIRE_AUTH.flag, env = pc::REQUIRE_AUTH.env,
          default_value = pc::REQUIRE_AUTH.default, value_parser = clap::builder::BoolishValueParser::new())]
    pub require_auth: bool,

    /// Redis broker URL, redis:// or rediss:// (default: in-process memory broker)
    #[arg(long = pc::REDIS_URL.flag, env = pc::REDIS_URL.env,
          hide_env_values = pc::REDIS_URL.secret)]
    pub redis_url: Option<String>,

    /// Password (Redis AUTH) of the Redis master, replicas and Cluster nodes, and
    /// of the Sentinels unless --redis-sentinel-password is set
    #[arg(long = pc::REDIS_PASSWORD.flag, env = pc::REDIS_PASSWORD.env,
          hide_env_values = pc::REDIS_PASSWORD.secret)]
    pub redis_password: Option<String>,

    /// Password of the Sentinels when it differs from --redis-password
    #[arg(long = pc::REDIS_SENTINEL_PASSWORD.flag, env = pc::REDIS_SENTINEL_PASSWORD.env,
          hide_env_values = pc::REDIS_SENTINEL_PASSWORD.secret)]
    pub redis_sentinel_password: Option<String>,

    /// PEM file of the CA certificate(s) trusted for rediss:// (instead of the system roots)
    #[arg(long = pc::REDIS_CA_FILE.flag, env = pc::REDIS_CA_FILE.env, value_name = "PEM_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Redis Sentinel addresses host:port,… (with --redis-master-name)
    #[arg(long = pc::REDIS_SENTINEL.flag, env = pc::REDIS_SENTINEL.env, value_delimiter = ',')]
    pub redis_sentinel: Vec<String>,

    /// Name of the master monitored by the Sentinels
    #[arg(long = pc::REDIS_MASTER_NAME.flag, env = pc::REDIS_MASTER_NAME.env)]
    pub redis_master_name: Option<String>,

    /// Redis Cluster seed nodes host:port,… (sharded pub/sub)
    #[arg(long = pc::REDIS_CLUSTER.flag, env = pc::REDIS_CLUSTER.env, value_delimiter = ',')]
    pub redis_cluster: Vec<String>,

    /// Replicas that must hold a publish before it is answered (Redis WAIT)
    #[arg(long = pc::PUBLISH_MIN_REPLICAS.flag, env = pc::PUBLISH_MIN_REPLICAS.env,
          default_value = pc::PUBLISH_MIN_REPLICAS.default)]
    pub publish_min_replicas: u32,

    /// Origins allowed for CORS and WebSocket (comma-separated, * for all)
    #[arg(long = pc::ALLOWED_ORIGINS.flag, env = pc::ALLOWED_ORIGINS.env, value_delimiter = ',',
          default_value = pc::ALLOWED_ORIGINS.default)]
    pub allowed_origins: Vec<String>,

    /// Log format
    #[arg(long = pc::LOG_FORMAT.flag, env = pc::LOG_FORMAT.env, value_enum,
          default_value = pc::LOG_FORMAT.default)]
    pub log_format: LogFormat,
}

impl Config {
    /// Loads from the process arguments and environment.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// Loads from explicit arguments (the first is the program name) and the
    /// process environment.
    pub fn load_from<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let matches = Config::command().try_get_matches_from(&args)?;
        let mut config = Config::from_arg_matches(&matches)?;
        if let Some(path) = config.config.clone() {
            let extra = yaml_as_flags(&path, &matches)?;
            if !extra.is_empty() {
                let mut merged = Vec::with_capacity(args.len() + extra.len());
                merged.extend(args.first().cloned());
                merged.extend(extra.into_iter().map(OsString::from));
                merged.extend(args.iter().skip(1).cloned());
                let matches = Config::command().try_get_matches_from(&merged)?;
                config = Config::from_arg_matches(&matches)?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Applies push-config's start-up checks ([`push_config::CHECKS`]), the
    /// same list the operator turns into CEL rules, so both refuse the same
    /// configurations with the same words.
    fn validate(&self) -> Result<(), ConfigError> {
        for check in pc::CHECKS {
            if !self.passes(check)? {
                return Err(ConfigError::Invalid {
                    name: check.setting.key,
                    message: check.message.to_string(),
                });
            }
        }
        Ok(())
    }

    fn passes(&self, check: &pc::Check) -> Result<bool, ConfigError> {
        let key = check.setting.key;
        Ok(match check.rule {
            pc::Rule::DurationAboveZero => !self.duration(key)?.unwrap_or_default().is_zero(),
            pc::Rule::CountAtLeast(min) => self.count(key)? >= min,
            pc::Rule::LongerThan(other) => self.duration(key)? > self.duration(other.key)?,
            pc::Rule::AtMost(max) => {
                let max = parse_duration(max).map_err(|e| ConfigError::Invalid {
                    name: key,
                    message: e.to_string(),
                })?;
                self.duration(key)?.is_none_or(|d| d <= max)
            }
            pc::Rule::RequiresAnyOf(any) => {
                !self.is_set(key)?
                    || any.iter().try_fold(false, |found, s| {
                        Ok::<_, ConfigError>(found || self.is_set(s.key)?)
                    })?
            }
            pc::Rule::DiffersFrom(other) => {
                !self.is_set(key)? || self.address(key)? != self.address(other.key)?
            }
        })
    }

    /// A duration setting by YAML key (`None`: an off-able one that is off).
    fn duration(&self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        Ok(match key {
            "heartbeat" => Some(self.heartbeat),
            "idle_timeout" => Some(self.idle_timeout),
            "sse_heartbeat" => Some(self.sse_heartbeat),
            "history_ttl" => Some(self.history_ttl),
            "ack_timeout" => Some(self.ack_timeout),
            "drain_period" => Some(self.drain_period),
            "max_connection_lifetime" => self.max_connection_lifetime.0,
            "write_delay" => self.write_delay.0,
            _ => return Err(no_check_for(key)),
        })
    }

    fn count(&self, key: &'static str) -> Result<u64, ConfigError> {
        let n = match key {
            "max_connections" => self.max_connections,
            "max_channels_per_connection" => self.max_channels_per_connection,
            "max_message_bytes" => self.max_message_bytes,
            "outbound_queue" => self.outbound_queue,
            "history_size" => self.history_size,
            "ack_window" => self.ack_window,
            "max_connections_per_ip" => self.max_connections_per_ip,
            "max_redeliveries" => self.max_redeliveries as usize,
            "publish_rate_limit" => self.publish_rate_limit as usize,
            "publish_min_replicas" => self.publish_min_replicas as usize,
            _ => return Err(no_check_for(key)),
        };
        Ok(n as u64)
    }

    fn address(&self, key: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
        match key {
            "listen" => Ok(Some(self.listen)),
            "metrics_listen" => Ok(self.metrics_listen),
            _ => Err(no_check_for(key)),
        }
    }

    fn is_set(&self, key: &'static str) -> Result<bool, ConfigError> {
        Ok(match key {
            "require_auth" => self.require_auth,
            "jwt_secret" => self.jwt_secret.as_deref().is_some_and(|s| !s.is_empty()),
            "jwt_public_key" => self
                .jwt_public_key
                .as_ref()
                .is_some_and(|p| !p.as_os_str().is_empty()),
            "publish_key" => self.publish_key.iter().any(|k| !k.is_empty()),
            "metrics_listen" => self.metrics_listen.is_some(),
            _ => return Err(no_check_for(key)),
        })
    }
}

/// A check in push-config over a setting this file does not look up: a
/// programming error the `every_check_is_applied` test catches.
fn no_check_for(key: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name: key,
        message: "push-config has a start-up check this push-server cannot evaluate".into(),
    }
}

/// Turns the YAML file's keys into `--key=value` flags for every setting not
/// already given by a flag or an environment variable.
fn yaml_as_flags(path: &PathBuf, matches: &ArgMatches) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let yaml_err = |message: String| ConfigError::Yaml {
        path: path.clone(),
        message,
    };
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| yaml_err(e.to_string()))?;
    let map = match doc {
        serde_yaml::Value::Null => return Ok(Vec::new()),
        serde_yaml::Value::Mapping(map) => map,
        _ => {
            return Err(yaml_err(
                "the top level must be a mapping of setting: value".into(),
            ))
        }
    };
    let command = Config::command();
    let mut flags = Vec::new();
    for (key, value) in map {
        let key = key
            .as_str()
            .ok_or_else(|| yaml_err("setting names must be strings".into()))?
            .to_string();
        let arg = command.get_arguments().find(|a| a.get_id().as_str() == key);
        let Some(arg) = arg.filter(|_| key != "config") else {
            return Err(yaml_err(format!("unknown setting {key:?}")));
        };
        if !matches!(
            matches.value_source(&key),
            None | Some(ValueSource::DefaultValue)
        ) {
            continue; // a flag or env var wins over the file
        }
        let value = yaml_scalar(&value).map_err(|m| yaml_err(format!("{key}: {m}")))?;
        let flag = arg.get_long().unwrap_or(key.as_str());
        if arg.get_action().takes_values() {
            flags.push(format!("--{flag}={value}"));
        } else {
            // A switch (require_auth): `true` turns it on, `false` leaves it off.
            match value.as_str() {
                "true" => flags.push(format!("--{flag}")),
                "false" => {}
                _ => return Err(yaml_err(format!("{key}: expected true or false"))),
            }
        }
    }
    Ok(flags)
}

fn yaml_scalar(value: &serde_yaml::Value) -> Result<String, String> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        Value::Sequence(items) => {
            let parts: Result<Vec<_>, _> = items.iter().map(yaml_scalar).collect();
            Ok(parts?.join(","))
        }
        _ => Err("expected a scalar or a list".into()),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
