//! The `keyway` binary, run as a user would.

use std::process::Command;

fn keyway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(args)
        .env_remove("REDIS_URL")
        .output()
        .expect("the keyway binary runs")
}

#[test]
fn the_demo_lands_real_commits_on_its_own_redis_server() {
    let out = keyway(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("started redis-server on redis://127.0.0.1:"),
        "{stdout}"
    );
    for (batch, line) in [
        ("payments/batch/1", "SUCCEEDED"),
        (
            "payments/batch/2",
            "FAILED     step payments/3: refs/heads/ledger-rewrite at ",
        ),
        ("payments/batch/3", "SUCCEEDED"),
        ("search/batch/1", "FAILED     dead-lettered: cannot reach "),
        ("search/batch/2", "SUCCEEDED"),
        ("infra/batch/1", "SUCCEEDED"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(batch) && l.contains(line)),
            "{batch} {line}\n{stdout}"
        );
    }
    assert!(
        stdout.contains("conflicts with main in src/ledger.txt"),
        "{stdout}"
    );
    let landed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("LANDED"))
        .collect();
    assert_eq!(landed.len(), 6, "{stdout}");
    // Real revisions: 12-hex prefixes, two for the two picked commits of payments/1.
    let payments_1: Vec<&str> = landed[0].split_whitespace().skip(2).collect();
    assert_eq!(payments_1.len(), 2, "{stdout}");
    assert!(payments_1
        .iter()
        .all(|r| r.len() == 12 && r.bytes().all(|b| b.is_ascii_hexdigit())));
    assert!(
        stdout.contains("payments/5     LANDED   (already on main"),
        "{stdout}"
    );
    // Each target's history, with the landed commits on top.
    for graph in [
        "squash: payments/2 (fee-table)",
        "Merge query-parser (",
        "Release version 2",
    ] {
        assert!(stdout.contains(graph), "{graph}\n{stdout}");
    }
    // It says what to expect, and that it happened.
    for seeded in [
        "payments/batch/2 is seeded to fail: ledger-rewrite changes the lines ledger-rounding changed",
        "search/batch/1 is seeded to fail: search-fork.git is gone",
    ] {
        assert!(stdout.contains(seeded), "{stdout}");
    }
    assert_eq!(
        stdout.lines().last(),
        Some("6 batches: 4 succeeded, 2 failed as seeded; 0 unexpected"),
        "{stdout}"
    );
    // The server it started is gone with it.
    let port = stdout
        .split("redis://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("the demo prints its server's port");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn descriptor_writes_the_embedded_set() {
    let out = keyway(&["descriptor"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, keyway::DESCRIPTOR_SET);
}

#[test]
fn usage_errors_exit_2() {
    for (args, says) in [
        (&["frobnicate"][..], "unrecognized subcommand 'frobnicate'"),
        (&["run"], "required arguments were not provided"),
        (
            &["run", "sideways"],
            "[possible values: merge, mergesignal, runway,",
        ),
        (&["dlq"], "Usage: keyway dlq <COMMAND>"),
        (
            &["run", "merge", "--threads", "0"],
            "invalid value '0' for '--threads <N>': 0 is not in 1..=256",
        ),
    ] {
        let out = keyway(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stderr.contains("--help"), "{args:?}: {stderr}");
    }
}

#[test]
fn version_and_help_for_every_command() {
    let out = keyway(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("keyway {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["demo", "--help"],
        &["run", "--help"],
        &["acl", "--help"],
        &["dlq", "--help"],
        &["dlq", "list", "--help"],
        &["descriptor", "--help"],
        &["contract", "--help"],
        &["contract", "check", "--help"],
        &["contract", "breaking", "--help"],
        &["contract", "descriptor", "--help"],
        &["contract", "topics", "--help"],
    ] {
        let out = keyway(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {stdout}");
        let command = args[..args.len() - 1].join(" ");
        let usage = format!("Usage: keyway {command}").trim_end().to_owned();
        assert!(stdout.contains(&usage), "{args:?}: {stdout}");
    }
    // `run --help` is help, not a role named `--help`, and lists the roles.
    let stdout = String::from_utf8_lossy(&keyway(&["run", "--help"]).stdout).into_owned();
    for role in ["merge", "mergesignal", "runway", "reconcile", "all"] {
        assert!(stdout.contains(&format!("- {role}:")), "{stdout}");
    }
    for option in [
        "--log-format <FORMAT>",
        "--metrics-addr <ADDR>",
        "KEYWAY_LOG",
    ] {
        assert!(stdout.contains(option), "{option}: {stdout}");
    }
    let stdout = String::from_utf8_lossy(&keyway(&["acl", "--help"]).stdout).into_owned();
    for role in ["merge", "runway", "submit", "inspect"] {
        assert!(stdout.contains(&format!("- {role}:")), "{stdout}");
    }
}

#[test]
fn a_mistyped_command_suggests_the_closest_one() {
    for (args, suggestion) in [
        (&["dmeo"][..], "'demo'"),
        (&["contract", "brekaing"], "'breaking'"),
        (&["contract", "chekc"], "'check'"),
    ] {
        let out = keyway(args);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("a similar subcommand exists: {suggestion}")),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn help_never_shows_the_redis_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["run", "--help"])
        .env("REDIS_URL", "redis://app:hunter2@127.0.0.1:6379")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[env: REDIS_URL]"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_connection_error_is_one_readable_line_without_the_password() {
    let port = closed_port();
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["dlq", "list"])
        .env("REDIS_URL", format!("redis://app:hunter2@127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!("keyway: cannot connect to Redis at redis://app:***@127.0.0.1:{port}: connection refused")
    );
}

#[test]
fn a_url_that_is_not_redis_is_rejected_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["dlq", "list"])
        .env("REDIS_URL", "http://127.0.0.1:6390")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`http://` is not a Redis URL scheme (expected one of redis://, rediss://"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn the_example_config_matches_the_contract_and_the_stages() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["contract", "check", "-I", "api", "-I", "orchestrator/proto"])
        .args(["--config", "keyway.toml"])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 error(s), 0 warning(s)"), "{stdout}");
    // ... and the stages run with it.
    let config =
        keyway::stages::app::load_config(&std::path::Path::new(root).join("keyway.toml"), None)
            .unwrap();
    let runway = &config.subscriptions["runway"];
    assert_eq!(runway.topic, "runway-merge");
    assert_eq!(
        runway.visibility_timeout,
        std::time::Duration::from_secs(300)
    );
}

#[test]
fn a_missing_import_says_which_proto_path_would_find_it() {
    let dir = std::env::temp_dir().join(format!("keyway-cli-imports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("api/acme/common")).unwrap();
    std::fs::create_dir_all(dir.join("api/acme/orders")).unwrap();
    std::fs::write(
        dir.join("api/acme/common/money.proto"),
        "syntax = \"proto3\";\npackage acme.common;\nmessage Money { int64 units = 1; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("api/acme/orders/order.proto"),
        "syntax = \"proto3\";\npackage acme.orders;\nimport \"acme/common/money.proto\";\nmessage Order { acme.common.Money total = 1; }\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(&["contract", "check"]);
    assert!(
        stderr.contains("import 'acme/common/money.proto' not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("help: no -I/--proto-path was given, so only the current directory was searched; `-I api` would find 'acme/common/money.proto'"),
        "{stderr}"
    );
    std::fs::remove_file(dir.join("api/acme/common/money.proto")).unwrap();
    let stderr = run(&["contract", "check", "-I", "api"]);
    assert!(
        stderr.contains("help: 'acme/common/money.proto' is not under any proto path (searched -I api); pass the directory it is relative to with -I"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn commands_that_need_redis_say_how_to_point_at_it() {
    let out = keyway(&["dlq", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_URL is not set"));
}

#[test]
fn a_config_file_missing_a_stage_topic_names_the_key() {
    let dir = std::env::temp_dir().join(format!("keyway-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keyway.toml");
    std::fs::write(&path, "[topics]\nrunway-merge = \"runway-merge\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["run", "merge"])
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("KEYWAY_CONFIG", &path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("config key `topics.conclude` is missing: the stages publish or consume it"),
        "{stderr}"
    );
}

#[test]
fn the_runway_role_needs_its_merger_configured() {
    let dir = std::env::temp_dir().join(format!("keyway-cli-runway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/keyway.toml")).unwrap();
    let path = dir.join("keyway.toml");
    let runway = |extra: &str| {
        std::fs::write(&path, format!("{example}\n{extra}")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_keyway"))
            .args(["run", "runway"])
            .env("REDIS_URL", format!("redis://127.0.0.1:{}", closed_port()))
            .env("KEYWAY_CONFIG", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let run = |extra: &str| {
        let out = runway(extra).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run("");
    assert!(
        stderr.contains("the runway role needs a [runway] section in the config"),
        "{stderr}"
    );
    let stderr = run("[runway]\nmirror_dir = \"/tmp\"\n[runway.queues.pay]\nrepository = \"/r\"\nbranch = \"main\"\nmax_landing_attempts = 5000\n");
    assert!(
        stderr.contains(
            "config key runway.queues.pay.max_landing_attempts: 5000 is out of range (1..=1000)"
        ),
        "{stderr}"
    );
    // With the merger configured it gets as far as waiting for Redis.
    let mut child = runway("[runway]\nmerger = \"fake\"\n");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("not reachable") {
        line.clear();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(read > 0, "it stopped before waiting for Redis");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_password_can_come_from_the_environment_alone() {
    use keyway_runtime::redis::embedded::EmbeddedSecurity;
    use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis};
    let server = EmbeddedRedis::start_secured(
        EmbeddedOptions::default(),
        EmbeddedSecurity {
            password: Some("hunter2".into()),
            tls: None,
        },
    )
    .unwrap();
    let list = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_keyway"))
            .args(["dlq", "list"])
            .env("REDIS_URL", server.url())
            .env("REDIS_PASSWORD", password)
            .env_remove("KEYWAY_CONFIG")
            .output()
            .unwrap()
    };
    let out = list("hunter2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no parked dead letters"));
    let out = list("wrong");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("REDIS_PASSWORD"), "{stderr}");
    assert!(
        !stderr.contains("wrong") || stderr.contains("WRONGPASS"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
