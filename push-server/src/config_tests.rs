//! Unit tests of the settings: names shared with push-config, defaults,
//! durations, the YAML file, and every start-up check with its message.

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
    let err = Config::load_from(["push-server", "--config", file.to_str().unwrap()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown setting \"max_conections\""),
        "{err}"
    );

    std::fs::write(&file, "heartbeat: soon\n").unwrap();
    let err = Config::load_from(["push-server", "--config", file.to_str().unwrap()]).unwrap_err();
    assert!(err.to_string().contains("heartbeat"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_values_are_refused() {
    assert!(Config::load_from(["push-server", "--outbound-queue", "0"]).is_err());
    assert!(
        Config::load_from(["push-server", "--heartbeat", "10s", "--idle-timeout", "5s"]).is_err()
    );
    assert!(Config::load_from(["push-server", "--max-connections", "lots"]).is_err());
    let err = Config::load_from(["push-server", "--write-delay", "2s"]).unwrap_err();
    assert!(err.to_string().contains("write_delay"), "{err}");
    let ok = Config::load_from(["push-server", "--write-delay", "10ms"]).unwrap();
    assert_eq!(ok.write_delay, OptDuration(Some(Duration::from_millis(10))));
    let off = Config::load_from(["push-server"]).unwrap();
    assert_eq!(off.write_delay, OptDuration(None));
}

/// Every flag, variable, secrecy and default of `Config` is the one
/// push-config lists, and push-config lists nothing `Config` lacks.
#[test]
fn names_come_from_push_config() {
    let command = Config::command();
    let args: Vec<_> = command
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    for arg in &args {
        let id = arg.get_id().as_str();
        let s = pc::by_key(id).unwrap_or_else(|| panic!("{id} is not in push-config"));
        assert_eq!(arg.get_long(), Some(s.flag), "{id}: flag");
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(s.env),
            "{id}: env"
        );
        assert_eq!(arg.is_hide_env_values_set(), s.secret, "{id}: secret");
        let default: Vec<_> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let expected: Vec<_> = s.default.into_iter().collect();
        assert_eq!(default, expected, "{id}: default");
        // Only a switch takes no value (and so YAML `true` becomes `--flag`).
        assert_eq!(
            arg.get_action().takes_values(),
            s.kind != pc::Kind::Bool,
            "{id}: switch"
        );
    }
    for s in pc::SETTINGS {
        assert!(
            args.iter().any(|a| a.get_id().as_str() == s.key),
            "push-config setting {} is not a push-server flag",
            s.key
        );
    }
    assert_eq!(args.len(), pc::SETTINGS.len());
}

/// A configuration breaking each of push-config's start-up checks, so
/// that every check is proven applied with its message.
fn breaking(check: &pc::Check) -> Vec<&'static str> {
    match (check.setting.key, check.rule) {
        ("heartbeat", pc::Rule::DurationAboveZero) => vec!["--heartbeat", "0s"],
        ("sse_heartbeat", pc::Rule::DurationAboveZero) => vec!["--sse-heartbeat", "0"],
        ("idle_timeout", pc::Rule::LongerThan(_)) => {
            vec!["--heartbeat", "10s", "--idle-timeout", "10s"]
        }
        (key, pc::Rule::CountAtLeast(1)) => match key {
            "outbound_queue" => vec!["--outbound-queue", "0"],
            "max_connections" => vec!["--max-connections", "0"],
            "max_channels_per_connection" => vec!["--max-channels-per-connection", "0"],
            "max_message_bytes" => vec!["--max-message-bytes", "0"],
            "ack_window" => vec!["--ack-window", "0"],
            other => panic!("no breaking case for {other}"),
        },
        ("write_delay", pc::Rule::AtMost("1s")) => vec!["--write-delay", "1001ms"],
        ("metrics_listen", pc::Rule::DiffersFrom(_)) => vec![
            "--listen",
            "127.0.0.1:9999",
            "--metrics-listen",
            "127.0.0.1:9999",
        ],
        ("require_auth", pc::Rule::RequiresAnyOf(_)) => vec!["--require-auth"],
        (key, rule) => panic!("no breaking case for {key} {rule:?}"),
    }
}

#[test]
fn every_check_is_applied_with_its_message() {
    assert!(Config::load_from(["push-server"]).is_ok(), "defaults pass");
    for check in pc::CHECKS {
        let mut args = vec!["push-server"];
        args.extend(breaking(check));
        let err = Config::load_from(&args).unwrap_err();
        assert_eq!(err.to_string(), check.error(), "{args:?}");
    }
}

#[test]
fn require_auth_needs_a_key() {
    let err = Config::load_from(["push-server", "--require-auth"]).unwrap_err();
    let text = err.to_string();
    for name in [
        "require_auth",
        "jwt_secret",
        "jwt_public_key",
        "publish_key",
    ] {
        assert!(text.contains(name), "{text}");
    }
    for key in [
        ["--publish-key", "k1"],
        ["--jwt-secret", "s"],
        ["--jwt-public-key", "/etc/key.pem"],
    ] {
        let c = Config::load_from(["push-server", "--require-auth", key[0], key[1]]).unwrap();
        assert!(c.require_auth);
    }
    let c = Config::load_from(["push-server"]).unwrap();
    assert!(!c.require_auth, "off by default: cargo run stays open");
    assert!(Config::load_from(["push-server", "--require-auth", "--publish-key", ""]).is_err());
}

#[test]
fn yaml_switch_and_new_settings() {
    let dir = std::env::temp_dir().join(format!("push-config-sw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("push.yaml");
    let path = file.to_str().unwrap();
    std::fs::write(
        &file,
        "require_auth: true\npublish_key: [k]\nmetrics_listen: 127.0.0.1:9090\n\
         redis_password: pw\nredis_sentinel_password: spw\n",
    )
    .unwrap();
    let c = Config::load_from(["push-server", "--config", path]).unwrap();
    assert!(c.require_auth);
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.redis_password.as_deref(), Some("pw"));
    assert_eq!(c.redis_sentinel_password.as_deref(), Some("spw"));

    std::fs::write(&file, "require_auth: false\n").unwrap();
    let c = Config::load_from(["push-server", "--config", path]).unwrap();
    assert!(!c.require_auth);

    std::fs::write(&file, "require_auth: maybe\n").unwrap();
    let err = Config::load_from(["push-server", "--config", path]).unwrap_err();
    assert!(err.to_string().contains("require_auth"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
