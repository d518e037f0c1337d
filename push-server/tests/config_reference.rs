//! The configuration and metrics references in `docs/operations.md` are
//! generated from the server itself, and this test fails when they drift:
//!
//! - the configuration table between the `config-reference` markers is
//!   rendered from `push-server --help` (flag, `PUSH_*` variable, YAML key,
//!   default, description of every setting);
//! - the metrics table between the `metrics-reference` markers must name
//!   exactly the metric families a running server exposes on `/metrics`.
//!
//! `UPDATE_DOCS=1 cargo test -p push-server --test config_reference`
//! rewrites the configuration table; the metrics table is prose and is edited
//! by hand (the failure message says what is missing or extra).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_push-server");
const CONFIG_BEGIN: &str = "<!-- config-reference:begin";
const CONFIG_END: &str = "<!-- config-reference:end -->";
const METRICS_BEGIN: &str = "<!-- metrics-reference:begin -->";
const METRICS_END: &str = "<!-- metrics-reference:end -->";

fn operations_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md")
}

/// `push-server` with no `PUSH_*` variable set, so `--help` shows defaults
/// only (clap prints the current value of an `env` setting).
fn server_command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("PUSH_") || k == "COLUMNS" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// One option of `--help`.
#[derive(Debug)]
struct Setting {
    flag: String,
    value_name: Option<String>,
    env: Option<String>,
    default: Option<String>,
    possible: Option<String>,
    help: String,
}

/// Parses clap's long help: an option line (`  -x, --flag <VALUE>` or
/// `      --flag <VALUE>`), then its description indented further, wrapped
/// over several lines, with `[env: …]`, `[default: …]` and
/// `[possible values: …]` at the end.
fn parse_help(text: &str) -> Vec<Setting> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_options = false;
    for line in text.lines() {
        if line.trim_end() == "Options:" {
            in_options = true;
            continue;
        }
        if !in_options || line.trim().is_empty() {
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent <= 6 && trimmed.starts_with('-') {
            out.push((trimmed.to_string(), String::new()));
        } else if let Some((_, desc)) = out.last_mut() {
            if !desc.is_empty() {
                desc.push(' ');
            }
            desc.push_str(trimmed);
        }
    }
    out.into_iter()
        .filter_map(|(head, desc)| {
            let long = head.split(", ").last()?.trim();
            let (flag, value_name) = match long.split_once(' ') {
                Some((f, v)) => (f, Some(v.trim_matches(|c| c == '<' || c == '>'))),
                None => (long, None),
            };
            let flag = flag.trim_start_matches("--").to_string();
            if flag == "help" || flag == "version" {
                return None;
            }
            let (help, env) = take_bracket(&desc, "[env: ");
            let (help, default) = take_bracket(&help, "[default: ");
            let (help, possible) = take_bracket(&help, "[possible values: ");
            Some(Setting {
                flag,
                value_name: value_name.map(str::to_string),
                env: env.map(|e| e.trim_end_matches('=').to_string()),
                default,
                possible,
                help: help.trim().to_string(),
            })
        })
        .collect()
}

/// Removes `[prefix…]` from `s`, returning the rest and the bracket's content.
fn take_bracket(s: &str, prefix: &str) -> (String, Option<String>) {
    match s.find(prefix) {
        Some(start) => {
            let end = start + s[start..].find(']').expect("closing bracket");
            let value = s[start + prefix.len()..end].trim().to_string();
            let rest = format!("{} {}", s[..start].trim_end(), s[end + 1..].trim_start());
            (rest.trim().to_string(), Some(value))
        }
        None => (s.to_string(), None),
    }
}

fn render_table(settings: &[Setting]) -> String {
    let mut t = String::from(
        "| YAML key | flag | environment variable | default | what |\n|---|---|---|---|---|\n",
    );
    for s in settings {
        let flag = match &s.value_name {
            Some(v) => format!("`--{} <{}>`", s.flag, v),
            None => format!("`--{}`", s.flag),
        };
        let default = match s.default.as_deref() {
            Some(d) => format!("`{d}`"),
            None => "unset".to_string(),
        };
        let mut help = s.help.replace('|', "\\|");
        if let Some(p) = &s.possible {
            if !help.ends_with('.') {
                help.push('.');
            }
            help.push_str(&format!(" One of: {p}."));
        }
        t.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} |\n",
            s.flag.replace('-', "_"),
            flag,
            s.env.as_deref().unwrap_or("-"),
            default,
            help
        ));
    }
    t
}

/// Text between the line starting with `begin` and the line `end`.
fn section<'a>(doc: &'a str, begin: &str, end: &str) -> (usize, usize, &'a str) {
    let b = doc
        .find(begin)
        .unwrap_or_else(|| panic!("docs/operations.md has no `{begin}` marker"));
    let body_start = b + doc[b..].find('\n').expect("marker line") + 1;
    let e = doc[body_start..]
        .find(end)
        .unwrap_or_else(|| panic!("docs/operations.md has no `{end}` marker"))
        + body_start;
    (body_start, e, &doc[body_start..e])
}

#[test]
fn configuration_reference_matches_help() {
    let out = server_command()
        .arg("--help")
        .output()
        .expect("run push-server --help");
    assert!(out.status.success(), "push-server --help failed");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    let settings = parse_help(&help);

    // Every setting of docs/operations.md is there, under its one name used three ways.
    let spec = [
        "config",
        "listen",
        "metrics_listen",
        "heartbeat",
        "idle_timeout",
        "sse_heartbeat",
        "max_connections",
        "max_channels_per_connection",
        "max_message_bytes",
        "outbound_queue",
        "history_size",
        "history_ttl",
        "ack_timeout",
        "max_redeliveries",
        "ack_window",
        "drain_period",
        "max_connection_lifetime",
        "jwt_secret",
        "jwt_public_key",
        "publish_key",
        "redis_url",
        "redis_password",
        "redis_sentinel_password",
        "require_auth",
        "redis_sentinel",
        "redis_master_name",
        "redis_cluster",
        "publish_min_replicas",
        "allowed_origins",
        "log_format",
    ];
    for name in spec {
        let s = settings
            .iter()
            .find(|s| s.flag.replace('-', "_") == name)
            .unwrap_or_else(|| panic!("--help lacks the docs/operations.md setting {name}"));
        assert_eq!(
            s.env.as_deref(),
            Some(format!("PUSH_{}", name.to_uppercase()).as_str()),
            "{name}: environment variable"
        );
    }

    let table = render_table(&settings);
    let path = operations_md();
    let doc = std::fs::read_to_string(&path).expect("read docs/operations.md");
    let (start, end, current) = section(&doc, CONFIG_BEGIN, CONFIG_END);
    if current == table {
        return;
    }
    if std::env::var("UPDATE_DOCS").as_deref() == Ok("1") {
        let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(&path, updated).expect("write docs/operations.md");
        eprintln!("docs/operations.md: configuration reference updated");
        return;
    }
    let old: BTreeSet<&str> = current.lines().collect();
    let new: BTreeSet<&str> = table.lines().collect();
    let mut diff = String::new();
    for l in old.difference(&new) {
        diff.push_str(&format!("- {l}\n"));
    }
    for l in new.difference(&old) {
        diff.push_str(&format!("+ {l}\n"));
    }
    panic!(
        "the configuration reference in docs/operations.md is out of date with `push-server --help`.\n\
         Regenerate it: UPDATE_DOCS=1 cargo test -p push-server --test config_reference\n{diff}"
    );
}

/// Kills the child server when the test ends, passed or not.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200").then_some(body)
}

#[test]
fn metrics_reference_matches_metrics_endpoint() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let _server = Child(
        server_command()
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start push-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Some(body) = get(port, "/metrics") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "push-server did not serve /metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // `# TYPE name kind`; OpenMetrics counters are sampled as name_total.
    let exposed: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            Some(match parts.next()? {
                "counter" => format!("{name}_total"),
                _ => name.to_string(),
            })
        })
        .collect();
    assert!(
        exposed.contains("push_connections"),
        "no push_connections in /metrics"
    );

    let doc = std::fs::read_to_string(operations_md()).expect("read docs/operations.md");
    let (_, _, table) = section(&doc, METRICS_BEGIN, METRICS_END);
    // First column of each table row: `name{labels}` or `name`.
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split(['`', '{']).next())
        .filter(|n| n.starts_with("push_") || n.starts_with("process_"))
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = exposed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&exposed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/operations.md metrics reference: undocumented {missing:?}, not exposed {extra:?}"
    );
}
