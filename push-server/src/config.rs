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

/// Parses `500ms`, `1s`, `5m`, `1h30m`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 500ms, 1s, 5m)"))
}

fn parse_opt_duration(s: &str) -> Result<OptDuration, String> {
    match s.trim() {
        "off" | "none" | "" => Ok(OptDuration(None)),
        other => parse_duration(other).map(|d| OptDuration((!d.is_zero()).then_some(d))),
    }
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
    #[arg(long, env = "PUSH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the one HTTP port (WebSocket, SSE, API, metrics)
    #[arg(long, env = "PUSH_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// WebSocket Ping interval
    #[arg(long, env = "PUSH_HEARTBEAT", default_value = "25s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Close a WebSocket that sent no frame or Pong for this long
    #[arg(long, env = "PUSH_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Interval of the `: ping` comment on SSE streams
    #[arg(long, env = "PUSH_SSE_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub sse_heartbeat: Duration,

    /// Most WebSocket + SSE connections this node accepts (then 503 + Retry-After)
    #[arg(long, env = "PUSH_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Most subscriptions one connection may hold
    #[arg(long, env = "PUSH_MAX_CHANNELS_PER_CONNECTION", default_value_t = 128)]
    pub max_channels_per_connection: usize,

    /// Largest published message body in bytes (larger: 413)
    #[arg(long, env = "PUSH_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,

    /// Messages queued per connection before it is a slow consumer
    #[arg(long, env = "PUSH_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Messages retained per channel for resume (0: no history, pure pub/sub)
    #[arg(long, env = "PUSH_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,

    /// How long a message stays in history (0: no history)
    #[arg(long, env = "PUSH_HISTORY_TTL", default_value = "300s", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// Redelivery delay of an unacknowledged message (subscriptions with ack:true)
    #[arg(long, env = "PUSH_ACK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ack_timeout: Duration,

    /// Redeliveries of one unacknowledged message before giving up
    #[arg(long, env = "PUSH_MAX_REDELIVERIES", default_value_t = 5)]
    pub max_redeliveries: u32,

    /// Unacknowledged messages in flight per subscription
    #[arg(long, env = "PUSH_ACK_WINDOW", default_value_t = 256)]
    pub ack_window: usize,

    /// On SIGTERM, spread `reconnect` over this period, then exit
    #[arg(long, env = "PUSH_DRAIN_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub drain_period: Duration,

    /// Ask clients to reconnect after this long (± 10 % jitter); off by default
    #[arg(long, env = "PUSH_MAX_CONNECTION_LIFETIME", default_value = "off", value_parser = parse_opt_duration)]
    pub max_connection_lifetime: OptDuration,

    /// Hold a connection's first queued message this long so that the
    /// messages behind it go out in the same write (less CPU, more latency);
    /// off by default
    #[arg(long, env = "PUSH_WRITE_DELAY", default_value = "off", value_parser = parse_opt_duration)]
    pub write_delay: OptDuration,

    /// Most WebSocket + SSE connections from one client IP (0: no limit; then 429)
    #[arg(long, env = "PUSH_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// WebSocket publish frames per second per connection (0: no limit)
    #[arg(long, env = "PUSH_PUBLISH_RATE_LIMIT", default_value_t = 0)]
    pub publish_rate_limit: u32,

    /// HS256 secret that turns JWT auth on
    #[arg(long, env = "PUSH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// RS256/ES256 public key that turns JWT auth on: a PEM file, or the PEM text itself
    #[arg(long, env = "PUSH_JWT_PUBLIC_KEY", value_name = "PEM_FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Static bearer keys allowed to publish (comma-separated)
    #[arg(
        long,
        env = "PUSH_PUBLISH_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub publish_key: Vec<String>,

    /// Redis broker URL, redis:// or rediss:// (default: in-process memory broker)
    #[arg(long, env = "PUSH_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the CA certificate(s) trusted for rediss:// (instead of the system roots)
    #[arg(long, env = "PUSH_REDIS_CA_FILE", value_name = "PEM_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Redis Sentinel addresses host:port,… (with --redis-master-name)
    #[arg(long, env = "PUSH_REDIS_SENTINEL", value_delimiter = ',')]
    pub redis_sentinel: Vec<String>,

    /// Name of the master monitored by the Sentinels
    #[arg(long, env = "PUSH_REDIS_MASTER_NAME")]
    pub redis_master_name: Option<String>,

    /// Redis Cluster seed nodes host:port,… (sharded pub/sub)
    #[arg(long, env = "PUSH_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,

    /// Replicas that must hold a publish before it is answered (Redis WAIT)
    #[arg(long, env = "PUSH_PUBLISH_MIN_REPLICAS", default_value_t = 0)]
    pub publish_min_replicas: u32,

    /// Origins allowed for CORS and WebSocket (comma-separated, * for all)
    #[arg(
        long,
        env = "PUSH_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_origins: Vec<String>,

    /// Log format
    #[arg(long, env = "PUSH_LOG_FORMAT", value_enum, default_value = "text")]
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

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: &str| {
            Err(ConfigError::Invalid {
                name,
                message: message.to_string(),
            })
        };
        if self.heartbeat.is_zero() {
            return invalid("heartbeat", "must be above 0");
        }
        if self.idle_timeout <= self.heartbeat {
            return invalid("idle_timeout", "must be longer than heartbeat");
        }
        if self.sse_heartbeat.is_zero() {
            return invalid("sse_heartbeat", "must be above 0");
        }
        if self.outbound_queue == 0 {
            return invalid("outbound_queue", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_channels_per_connection == 0 {
            return invalid("max_channels_per_connection", "must be at least 1");
        }
        if self.max_message_bytes == 0 {
            return invalid("max_message_bytes", "must be at least 1");
        }
        if self.ack_window == 0 {
            return invalid("ack_window", "must be at least 1");
        }
        if self
            .write_delay
            .0
            .is_some_and(|d| d > Duration::from_secs(1))
        {
            return invalid("write_delay", "must be at most 1s");
        }
        Ok(())
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
        let known = command.get_arguments().any(|a| a.get_id().as_str() == key);
        if !known || key == "config" {
            return Err(yaml_err(format!("unknown setting {key:?}")));
        }
        if !matches!(
            matches.value_source(&key),
            None | Some(ValueSource::DefaultValue)
        ) {
            continue; // a flag or env var wins over the file
        }
        let value = yaml_scalar(&value).map_err(|m| yaml_err(format!("{key}: {m}")))?;
        flags.push(format!("--{}={}", key.replace('_', "-"), value));
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
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::load_from(["push-server"]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.heartbeat, Duration::from_secs(25));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.sse_heartbeat, Duration::from_secs(15));
        assert_eq!(c.max_connections, 100_000);
        assert_eq!(c.max_channels_per_connection, 128);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.outbound_queue, 1024);
        assert_eq!(
            (c.history_size, c.history_ttl),
            (100, Duration::from_secs(300))
        );
        assert_eq!(c.ack_timeout, Duration::from_secs(10));
        assert_eq!((c.max_redeliveries, c.ack_window), (5, 256));
        assert_eq!(c.drain_period, Duration::from_secs(30));
        assert_eq!(c.max_connection_lifetime, OptDuration(None));
        assert_eq!(c.allowed_origins, vec!["*".to_string()]);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.redis_url.is_none() && c.jwt_secret.is_none() && c.publish_key.is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_opt_duration("off"), Ok(OptDuration(None)));
        assert_eq!(
            parse_opt_duration("1h"),
            Ok(OptDuration(Some(Duration::from_secs(3600))))
        );
    }

    #[test]
    fn yaml_file_applies_below_flags() {
        let dir = std::env::temp_dir().join(format!("push-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("push.yaml");
        std::fs::write(
            &file,
            "max_connections: 7\nheartbeat: 2s\nidle_timeout: 5s\nallowed_origins: [https://a.example, https://b.example]\nhistory_size: 3\n",
        )
        .unwrap();
        let c = Config::load_from([
            "push-server",
            "--config",
            file.to_str().unwrap(),
            "--history-size",
            "9",
        ])
        .unwrap();
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.history_size, 9, "a flag beats the file");
        assert_eq!(
            c.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );

        std::fs::write(&file, "max_conections: 7\n").unwrap();
        let err =
            Config::load_from(["push-server", "--config", file.to_str().unwrap()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown setting \"max_conections\""),
            "{err}"
        );

        std::fs::write(&file, "heartbeat: soon\n").unwrap();
        let err =
            Config::load_from(["push-server", "--config", file.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("heartbeat"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::load_from(["push-server", "--outbound-queue", "0"]).is_err());
        assert!(
            Config::load_from(["push-server", "--heartbeat", "10s", "--idle-timeout", "5s"])
                .is_err()
        );
        assert!(Config::load_from(["push-server", "--max-connections", "lots"]).is_err());
        let err = Config::load_from(["push-server", "--write-delay", "2s"]).unwrap_err();
        assert!(err.to_string().contains("write_delay"), "{err}");
        let ok = Config::load_from(["push-server", "--write-delay", "10ms"]).unwrap();
        assert_eq!(ok.write_delay, OptDuration(Some(Duration::from_millis(10))));
        let off = Config::load_from(["push-server"]).unwrap();
        assert_eq!(off.write_delay, OptDuration(None));
    }
}
