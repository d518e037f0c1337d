//! # push-config
//!
//! push-server's setting names and value grammar, in one place, so that
//! everything that configures a push-server (its own `Config`, the
//! push-operator's PushCluster CRD and the objects it renders) uses the same
//! names and reads values the same way. `docs/operations.md` is the
//! reference for what each setting does.
//!
//! ## Layout
//!
//! - [`Setting`]: one setting, with its four names — YAML key (`max_connections`),
//!   flag (`--max-connections`), environment variable (`PUSH_MAX_CONNECTIONS`) and,
//!   where the PushCluster exposes it, the `spec.server` field (`maxConnections`) —
//!   its [`Kind`] of value, its default and whether it is a secret.
//!   Every setting is a constant ([`HEARTBEAT`], [`REDIS_PASSWORD`], …) and
//!   [`SETTINGS`] lists them all, in `push-server --help` order.
//! - Durations: [`parse_duration`] (`500ms`, `25s`, `1h30m`, bare seconds) and
//!   [`parse_off_duration`] (the same, or `off`/`0` for "turned off"), the
//!   grammar push-server reads. [`DURATION_PATTERN`] and
//!   [`OFF_DURATION_PATTERN`] are OpenAPI `pattern`s for the subset that both
//!   [`parse_duration`] and Kubernetes CEL's `duration()` (Go's
//!   `time.ParseDuration`) accept and read as the same length of time, so a
//!   CRD can compare durations in CEL rules and the server agrees.
//! - [`Check`]: the checks push-server applies at start, over one or several
//!   settings ([`CHECKS`]), each with the message the server prints, so that
//!   the operator can refuse the same specs at admission (one CEL rule per
//!   check) and test that it covers every one.
//!
//! The crate has no dependency but `humantime`; it knows nothing of clap,
//! serde or Kubernetes.

use std::fmt;
use std::time::Duration;

/// What values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A duration, read by [`parse_duration`]; the CRD validates it with
    /// [`DURATION_PATTERN`].
    Duration,
    /// A duration or `off` (also `0`), read by [`parse_off_duration`]; the CRD
    /// validates it with [`OFF_DURATION_PATTERN`].
    OffDuration,
    /// A non-negative integer.
    Count,
    /// `true` or `false` (a flag without value on the command line; the
    /// environment also takes `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A socket address `host:port` (`0.0.0.0:8080`).
    Address,
    /// Free text.
    Text,
    /// A list: comma-separated in a flag or variable, a YAML list in the file.
    List,
    /// A file path.
    Path,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

/// One push-server setting and its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The YAML key in the `--config` file, snake_case: `max_connections`.
    pub key: &'static str,
    /// The long flag, without the leading `--`: `max-connections`.
    pub flag: &'static str,
    /// The environment variable: `PUSH_MAX_CONNECTIONS`.
    pub env: &'static str,
    /// The PushCluster `spec.server` field (camelCase) when the CRD exposes
    /// this setting there; `None` for settings the operator sets itself
    /// (listeners, auth, Redis) or that make no sense on Kubernetes.
    pub crd_field: Option<&'static str>,
    /// What values it takes.
    pub kind: Kind,
    /// The default as push-server writes it in `--help`; `None`: unset.
    pub default: Option<&'static str>,
    /// A secret: never logged, its environment value hidden in `--help`.
    pub secret: bool,
}

const fn setting(
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    crd_field: Option<&'static str>,
    kind: Kind,
    default: Option<&'static str>,
) -> Setting {
    Setting {
        key,
        flag,
        env,
        crd_field,
        kind,
        default,
        secret: false,
    }
}

const fn secret(s: Setting) -> Setting {
    Setting { secret: true, ..s }
}

/// YAML file of settings.
pub const CONFIG: Setting = setting("config", "config", "PUSH_CONFIG", None, Kind::Path, None);
/// Address of the public HTTP port.
pub const LISTEN: Setting = setting(
    "listen",
    "listen",
    "PUSH_LISTEN",
    None,
    Kind::Address,
    Some("0.0.0.0:8080"),
);
/// Address of a separate metrics listener; when set `/metrics` is served
/// there only.
pub const METRICS_LISTEN: Setting = setting(
    "metrics_listen",
    "metrics-listen",
    "PUSH_METRICS_LISTEN",
    None,
    Kind::Address,
    None,
);
/// WebSocket Ping interval.
pub const HEARTBEAT: Setting = setting(
    "heartbeat",
    "heartbeat",
    "PUSH_HEARTBEAT",
    Some("heartbeat"),
    Kind::Duration,
    Some("25s"),
);
/// WebSocket idle timeout.
pub const IDLE_TIMEOUT: Setting = setting(
    "idle_timeout",
    "idle-timeout",
    "PUSH_IDLE_TIMEOUT",
    Some("idleTimeout"),
    Kind::Duration,
    Some("60s"),
);
/// SSE `: ping` interval.
pub const SSE_HEARTBEAT: Setting = setting(
    "sse_heartbeat",
    "sse-heartbeat",
    "PUSH_SSE_HEARTBEAT",
    Some("sseHeartbeat"),
    Kind::Duration,
    Some("15s"),
);
/// Connection cap of one node.
pub const MAX_CONNECTIONS: Setting = setting(
    "max_connections",
    "max-connections",
    "PUSH_MAX_CONNECTIONS",
    Some("maxConnections"),
    Kind::Count,
    Some("100000"),
);
/// Subscriptions one connection may hold.
pub const MAX_CHANNELS_PER_CONNECTION: Setting = setting(
    "max_channels_per_connection",
    "max-channels-per-connection",
    "PUSH_MAX_CHANNELS_PER_CONNECTION",
    Some("maxChannelsPerConnection"),
    Kind::Count,
    Some("128"),
);
/// Largest published body in bytes.
pub const MAX_MESSAGE_BYTES: Setting = setting(
    "max_message_bytes",
    "max-message-bytes",
    "PUSH_MAX_MESSAGE_BYTES",
    Some("maxMessageBytes"),
    Kind::Count,
    Some("65536"),
);
/// Per-connection outbound queue bound.
pub const OUTBOUND_QUEUE: Setting = setting(
    "outbound_queue",
    "outbound-queue",
    "PUSH_OUTBOUND_QUEUE",
    Some("outboundQueue"),
    Kind::Count,
    Some("1024"),
);
/// Messages retained per channel.
pub const HISTORY_SIZE: Setting = setting(
    "history_size",
    "history-size",
    "PUSH_HISTORY_SIZE",
    Some("historySize"),
    Kind::Count,
    Some("100"),
);
/// How long history is retained.
pub const HISTORY_TTL: Setting = setting(
    "history_ttl",
    "history-ttl",
    "PUSH_HISTORY_TTL",
    Some("historyTtl"),
    Kind::Duration,
    Some("300s"),
);
/// Redelivery delay of an unacknowledged message.
pub const ACK_TIMEOUT: Setting = setting(
    "ack_timeout",
    "ack-timeout",
    "PUSH_ACK_TIMEOUT",
    Some("ackTimeout"),
    Kind::Duration,
    Some("10s"),
);
/// Redeliveries before giving up.
pub const MAX_REDELIVERIES: Setting = setting(
    "max_redeliveries",
    "max-redeliveries",
    "PUSH_MAX_REDELIVERIES",
    Some("maxRedeliveries"),
    Kind::Count,
    Some("5"),
);
/// Unacknowledged messages in flight per subscription.
pub const ACK_WINDOW: Setting = setting(
    "ack_window",
    "ack-window",
    "PUSH_ACK_WINDOW",
    Some("ackWindow"),
    Kind::Count,
    Some("256"),
);
/// Period over which clients are told to reconnect on SIGTERM.
pub const DRAIN_PERIOD: Setting = setting(
    "drain_period",
    "drain-period",
    "PUSH_DRAIN_PERIOD",
    Some("drainPeriod"),
    Kind::Duration,
    Some("30s"),
);
/// Connection lifetime before a `reconnect` (off by default).
pub const MAX_CONNECTION_LIFETIME: Setting = setting(
    "max_connection_lifetime",
    "max-connection-lifetime",
    "PUSH_MAX_CONNECTION_LIFETIME",
    Some("maxConnectionLifetime"),
    Kind::OffDuration,
    Some("off"),
);
/// Write coalescing delay (off by default).
pub const WRITE_DELAY: Setting = setting(
    "write_delay",
    "write-delay",
    "PUSH_WRITE_DELAY",
    Some("writeDelay"),
    Kind::OffDuration,
    Some("off"),
);
/// Connections from one client IP (0: no limit).
pub const MAX_CONNECTIONS_PER_IP: Setting = setting(
    "max_connections_per_ip",
    "max-connections-per-ip",
    "PUSH_MAX_CONNECTIONS_PER_IP",
    Some("maxConnectionsPerIp"),
    Kind::Count,
    Some("0"),
);
/// WebSocket publish frames per second per connection (0: no limit).
pub const PUBLISH_RATE_LIMIT: Setting = setting(
    "publish_rate_limit",
    "publish-rate-limit",
    "PUSH_PUBLISH_RATE_LIMIT",
    Some("publishRateLimit"),
    Kind::Count,
    Some("0"),
);
/// HS256 JWT secret.
pub const JWT_SECRET: Setting = secret(setting(
    "jwt_secret",
    "jwt-secret",
    "PUSH_JWT_SECRET",
    None,
    Kind::Text,
    None,
));
/// RS256/ES256 public key (PEM file or PEM text).
pub const JWT_PUBLIC_KEY: Setting = setting(
    "jwt_public_key",
    "jwt-public-key",
    "PUSH_JWT_PUBLIC_KEY",
    None,
    Kind::Path,
    None,
);
/// Static publish keys.
pub const PUBLISH_KEY: Setting = secret(setting(
    "publish_key",
    "publish-key",
    "PUSH_PUBLISH_KEY",
    None,
    Kind::List,
    None,
));
/// Refuse to start without a JWT key or a publish key.
pub const REQUIRE_AUTH: Setting = setting(
    "require_auth",
    "require-auth",
    "PUSH_REQUIRE_AUTH",
    None,
    Kind::Bool,
    Some("false"),
);
/// Redis broker URL.
pub const REDIS_URL: Setting = secret(setting(
    "redis_url",
    "redis-url",
    "PUSH_REDIS_URL",
    None,
    Kind::Text,
    None,
));
/// Password for Redis master/replicas/Cluster nodes (and Sentinels unless
/// [`REDIS_SENTINEL_PASSWORD`] is set).
pub const REDIS_PASSWORD: Setting = secret(setting(
    "redis_password",
    "redis-password",
    "PUSH_REDIS_PASSWORD",
    None,
    Kind::Text,
    None,
));
/// Password for the Sentinels when it differs from [`REDIS_PASSWORD`].
pub const REDIS_SENTINEL_PASSWORD: Setting = secret(setting(
    "redis_sentinel_password",
    "redis-sentinel-password",
    "PUSH_REDIS_SENTINEL_PASSWORD",
    None,
    Kind::Text,
    None,
));
/// CA certificates trusted for `rediss://`.
pub const REDIS_CA_FILE: Setting = setting(
    "redis_ca_file",
    "redis-ca-file",
    "PUSH_REDIS_CA_FILE",
    None,
    Kind::Path,
    None,
);
/// Sentinel addresses.
pub const REDIS_SENTINEL: Setting = setting(
    "redis_sentinel",
    "redis-sentinel",
    "PUSH_REDIS_SENTINEL",
    None,
    Kind::List,
    None,
);
/// Name of the master the Sentinels monitor.
pub const REDIS_MASTER_NAME: Setting = setting(
    "redis_master_name",
    "redis-master-name",
    "PUSH_REDIS_MASTER_NAME",
    None,
    Kind::Text,
    None,
);
/// Redis Cluster seed nodes.
pub const REDIS_CLUSTER: Setting = setting(
    "redis_cluster",
    "redis-cluster",
    "PUSH_REDIS_CLUSTER",
    None,
    Kind::List,
    None,
);
/// Replicas that must hold a publish (Redis `WAIT`).
pub const PUBLISH_MIN_REPLICAS: Setting = setting(
    "publish_min_replicas",
    "publish-min-replicas",
    "PUSH_PUBLISH_MIN_REPLICAS",
    Some("publishMinReplicas"),
    Kind::Count,
    Some("0"),
);
/// CORS and WebSocket origin allow-list.
pub const ALLOWED_ORIGINS: Setting = setting(
    "allowed_origins",
    "allowed-origins",
    "PUSH_ALLOWED_ORIGINS",
    Some("allowedOrigins"),
    Kind::List,
    Some("*"),
);
/// Log format.
pub const LOG_FORMAT: Setting = setting(
    "log_format",
    "log-format",
    "PUSH_LOG_FORMAT",
    Some("logFormat"),
    Kind::Choice(&["text", "json"]),
    Some("text"),
);

/// Every push-server setting, in `push-server --help` order.
pub const SETTINGS: &[Setting] = &[
    CONFIG,
    LISTEN,
    METRICS_LISTEN,
    HEARTBEAT,
    IDLE_TIMEOUT,
    SSE_HEARTBEAT,
    MAX_CONNECTIONS,
    MAX_CHANNELS_PER_CONNECTION,
    MAX_MESSAGE_BYTES,
    OUTBOUND_QUEUE,
    HISTORY_SIZE,
    HISTORY_TTL,
    ACK_TIMEOUT,
    MAX_REDELIVERIES,
    ACK_WINDOW,
    DRAIN_PERIOD,
    MAX_CONNECTION_LIFETIME,
    WRITE_DELAY,
    MAX_CONNECTIONS_PER_IP,
    PUBLISH_RATE_LIMIT,
    JWT_SECRET,
    JWT_PUBLIC_KEY,
    PUBLISH_KEY,
    REQUIRE_AUTH,
    REDIS_URL,
    REDIS_PASSWORD,
    REDIS_SENTINEL_PASSWORD,
    REDIS_CA_FILE,
    REDIS_SENTINEL,
    REDIS_MASTER_NAME,
    REDIS_CLUSTER,
    PUBLISH_MIN_REPLICAS,
    ALLOWED_ORIGINS,
    LOG_FORMAT,
];

/// The setting with this YAML key.
pub fn by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The setting behind this PushCluster `spec.server` field.
pub fn by_crd_field(field: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.crd_field == Some(field))
}

// ---------------------------------------------------------------------------
// Durations

/// A duration that is neither [`parse_duration`] nor [`parse_off_duration`]
/// grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    message: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (write e.g. 500ms, 1s, 5m)", self.message)
    }
}

impl std::error::Error for DurationError {}

/// Reads a duration: `500ms`, `1s`, `5m`, `1h30m` (humantime's units and
/// spellings, e.g. `2 min`), or a bare number of seconds (`7`, `0.25`).
///
/// The part of this grammar that Kubernetes also reads is [`DURATION_PATTERN`].
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| DurationError {
        message: e.to_string(),
    })
}

/// Reads a duration that can be turned off: `off` (also `none`, empty, or any
/// zero duration such as `0`/`0s`) is `None`, anything else as
/// [`parse_duration`].
pub fn parse_off_duration(s: &str) -> Result<Option<Duration>, DurationError> {
    match s.trim() {
        "off" | "none" | "" => Ok(None),
        other => parse_duration(other).map(|d| (!d.is_zero()).then_some(d)),
    }
}

/// OpenAPI `pattern` (RE2 syntax) of the durations that [`parse_duration`]
/// and Go's `time.ParseDuration` (hence CEL's `duration()` in CRD validation
/// rules) both accept and read as the same length of time: one to four
/// `<integer><unit>` parts with unit `ms`, `s`, `m` or `h`, e.g. `500ms`,
/// `25s`, `1h30m`.
///
/// Left out on purpose: bare numbers (seconds to push-server, an error to Go
/// except `0`), fractions (`1.5h`), `us`/`ns` and humantime's long spellings.
/// At most five digits a part keeps every match (at most 4 × 99999h) far
/// below Go's 2562047h limit, so CEL never overflows on a valid value.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(ms|s|m|h)){1,4}$";

/// [`DURATION_PATTERN`] or `off`, for [`Kind::OffDuration`] settings.
/// A CEL rule must test `self != 'off'` before calling `duration(self)`;
/// `0s` (also off to push-server) is a valid duration for CEL as well.
pub const OFF_DURATION_PATTERN: &str = r"^(off|([0-9]{1,5}(ms|s|m|h)){1,4})$";

// ---------------------------------------------------------------------------
// Start-up checks

/// A condition over settings that push-server checks at start; a
/// configuration that breaks it is refused with
/// `invalid setting <setting.key>: <message>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The setting named in the error.
    pub setting: &'static Setting,
    /// What is required of it.
    pub rule: Rule,
    /// The message after `invalid setting <key>: `.
    pub message: &'static str,
}

/// What a [`Check`] requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The check's duration is above zero.
    DurationAboveZero,
    /// The check's count is at least this.
    CountAtLeast(u64),
    /// The check's duration is strictly longer than this other duration
    /// setting.
    LongerThan(&'static Setting),
    /// The check's off-able duration is off or at most this long (a
    /// [`DURATION_PATTERN`] string, e.g. `1s`).
    AtMost(&'static str),
    /// When the check's bool is true, at least one of these settings is set
    /// (non-empty).
    RequiresAnyOf(&'static [&'static Setting]),
    /// When the check's setting is set, it differs from this one.
    DiffersFrom(&'static Setting),
}

impl Check {
    /// The full error text push-server prints.
    pub fn error(&self) -> String {
        format!("invalid setting {}: {}", self.setting.key, self.message)
    }
}

/// The checks push-server applies after reading its settings, in the order it
/// applies them.
pub const CHECKS: &[Check] = &[
    Check {
        setting: &HEARTBEAT,
        rule: Rule::DurationAboveZero,
        message: "must be above 0",
    },
    Check {
        setting: &IDLE_TIMEOUT,
        rule: Rule::LongerThan(&HEARTBEAT),
        message: "must be longer than heartbeat",
    },
    Check {
        setting: &SSE_HEARTBEAT,
        rule: Rule::DurationAboveZero,
        message: "must be above 0",
    },
    Check {
        setting: &OUTBOUND_QUEUE,
        rule: Rule::CountAtLeast(1),
        message: "must be at least 1",
    },
    Check {
        setting: &MAX_CONNECTIONS,
        rule: Rule::CountAtLeast(1),
        message: "must be at least 1",
    },
    Check {
        setting: &MAX_CHANNELS_PER_CONNECTION,
        rule: Rule::CountAtLeast(1),
        message: "must be at least 1",
    },
    Check {
        setting: &MAX_MESSAGE_BYTES,
        rule: Rule::CountAtLeast(1),
        message: "must be at least 1",
    },
    Check {
        setting: &ACK_WINDOW,
        rule: Rule::CountAtLeast(1),
        message: "must be at least 1",
    },
    Check {
        setting: &WRITE_DELAY,
        rule: Rule::AtMost("1s"),
        message: "must be at most 1s",
    },
    Check {
        setting: &METRICS_LISTEN,
        rule: Rule::DiffersFrom(&LISTEN),
        message: "must differ from listen",
    },
    Check {
        setting: &REQUIRE_AUTH,
        rule: Rule::RequiresAnyOf(&[&JWT_SECRET, &JWT_PUBLIC_KEY, &PUBLISH_KEY]),
        message: "is true but no jwt_secret, jwt_public_key or publish_key is set \
                  (PUSH_JWT_SECRET, PUSH_JWT_PUBLIC_KEY, PUSH_PUBLISH_KEY)",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn camel(key: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in key.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn names_follow_one_rule() {
        let mut keys = std::collections::BTreeSet::new();
        for s in SETTINGS {
            assert!(keys.insert(s.key), "{} listed twice", s.key);
            assert_eq!(s.flag, s.key.replace('_', "-"), "{}: flag", s.key);
            assert_eq!(s.env, format!("PUSH_{}", s.key.to_uppercase()), "{}", s.key);
            if let Some(field) = s.crd_field {
                assert_eq!(field, camel(s.key), "{}: CRD field", s.key);
                assert_eq!(by_crd_field(field), Some(s));
            }
            assert_eq!(by_key(s.key), Some(s));
        }
        for c in CHECKS {
            assert!(SETTINGS.contains(c.setting), "{}", c.setting.key);
        }
    }

    #[test]
    fn defaults_are_in_their_own_grammar() {
        let duration = Regex::new(DURATION_PATTERN).unwrap();
        let off_duration = Regex::new(OFF_DURATION_PATTERN).unwrap();
        for s in SETTINGS {
            let Some(d) = s.default else { continue };
            match s.kind {
                Kind::Duration => {
                    assert!(duration.is_match(d), "{d}");
                    parse_duration(d).unwrap();
                }
                Kind::OffDuration => {
                    assert!(off_duration.is_match(d), "{d}");
                    parse_off_duration(d).unwrap();
                }
                Kind::Count => {
                    d.parse::<u64>().unwrap();
                }
                Kind::Bool => assert!(d == "true" || d == "false"),
                Kind::Choice(words) => assert!(words.contains(&d)),
                Kind::Address => {
                    d.parse::<std::net::SocketAddr>().unwrap();
                }
                Kind::Text | Kind::List | Kind::Path => {}
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        let err = parse_duration("soon").unwrap_err().to_string();
        assert!(err.contains("write e.g. 500ms"), "{err}");
        assert_eq!(parse_off_duration("off"), Ok(None));
        assert_eq!(parse_off_duration("0"), Ok(None));
        assert_eq!(parse_off_duration("0s"), Ok(None));
        assert_eq!(
            parse_off_duration("1h"),
            Ok(Some(Duration::from_secs(3600)))
        );
        assert!(parse_off_duration("later").is_err());
    }

    /// Go's `time.ParseDuration` restricted to the pattern's language:
    /// the sum of the parts (a reference written from Go's documentation).
    fn go_value(s: &str) -> Duration {
        let re = Regex::new(r"([0-9]+)(ms|s|m|h)").unwrap();
        re.captures_iter(s)
            .map(|c| {
                let n: u64 = c[1].parse().unwrap();
                match &c[2] {
                    "ms" => Duration::from_millis(n),
                    "s" => Duration::from_secs(n),
                    "m" => Duration::from_secs(n * 60),
                    _ => Duration::from_secs(n * 3600),
                }
            })
            .sum()
    }

    /// Strings inside and outside the pattern, hand-picked at its edges.
    const CORPUS: &[&str] = &[
        "0s",
        "1ms",
        "500ms",
        "1s",
        "25s",
        "60s",
        "5m",
        "1h",
        "1h30m",
        "2h45m10s",
        "1h1m1s1ms",
        "99999h",
        "007s",
        "1s1h",
        "10m10m",
        "100ms5s",
        "0",
        "7",
        "0.25",
        "1.5h",
        "1us",
        "1ns",
        "1d",
        "2 min",
        "1hour",
        "1h 30m",
        "-1s",
        "+1s",
        "",
        "s",
        "ms5",
        "123456s",
        "1h2m3s4ms5s",
        " 1s",
        "1s ",
        "off",
        "1S",
        "1M",
    ];

    #[test]
    fn pattern_matches_only_what_parse_duration_reads_like_go() {
        let re = Regex::new(DURATION_PATTERN).unwrap();
        let mut matched = 0;
        for s in CORPUS {
            if re.is_match(s) {
                matched += 1;
                assert_eq!(parse_duration(s), Ok(go_value(s)), "{s:?}");
            }
        }
        // The edges: bare numbers, fractions, other units, spaces, signs and
        // too many parts or digits are all outside.
        for s in [
            "0",
            "7",
            "0.25",
            "1.5h",
            "1us",
            "1d",
            "2 min",
            "1h 30m",
            "-1s",
            "",
            "123456s",
            "1h2m3s4ms5s",
            " 1s",
            "off",
            "1S",
        ] {
            assert!(!re.is_match(s), "{s:?} must not match");
        }
        assert!(matched >= 14, "{matched}");
    }

    #[test]
    fn off_pattern_adds_only_off() {
        let re = Regex::new(OFF_DURATION_PATTERN).unwrap();
        let plain = Regex::new(DURATION_PATTERN).unwrap();
        for s in CORPUS {
            assert_eq!(re.is_match(s), plain.is_match(s) || *s == "off", "{s:?}");
            if re.is_match(s) {
                let expect = go_value(s);
                assert_eq!(
                    parse_off_duration(s),
                    Ok((!expect.is_zero()).then_some(expect)),
                    "{s:?}"
                );
            }
        }
    }

    /// The same corpus through the real Go `time.ParseDuration` when a Go
    /// toolchain is installed (it is wherever the e2e tests run): every
    /// string the pattern accepts, Go reads as the same number of
    /// nanoseconds as parse_duration.
    #[test]
    fn pattern_agrees_with_go_time_parse_duration() {
        let Ok(go) = which_go() else {
            eprintln!("no `go` on PATH: the Go cross-check is skipped");
            return;
        };
        let dir = std::env::temp_dir().join(format!("push-config-go-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("main.go");
        std::fs::write(
            &main,
            r#"package main

import (
	"bufio"
	"fmt"
	"os"
	"time"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		d, err := time.ParseDuration(in.Text())
		if err != nil {
			fmt.Println("error")
		} else {
			fmt.Println(d.Nanoseconds())
		}
	}
}
"#,
        )
        .unwrap();
        let re = Regex::new(DURATION_PATTERN).unwrap();
        let inputs: Vec<&str> = CORPUS.iter().copied().filter(|s| re.is_match(s)).collect();
        let mut child = std::process::Command::new(go)
            .arg("run")
            .arg(&main)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("go run");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            for s in &inputs {
                writeln!(stdin, "{s}").unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "go run failed");
        let lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), inputs.len());
        for (s, go_ns) in inputs.iter().zip(lines) {
            let ours = parse_duration(s).unwrap().as_nanos().to_string();
            assert_eq!(go_ns, ours, "{s:?}: Go vs parse_duration");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    fn which_go() -> Result<std::path::PathBuf, ()> {
        let path = std::env::var_os("PATH").ok_or(())?;
        std::env::split_paths(&path)
            .chain([std::path::PathBuf::from("/usr/local/go/bin")])
            .map(|d| d.join("go"))
            .find(|p| p.is_file())
            .ok_or(())
    }
}
