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
fn the_demo_runs_the_whole_loop_on_its_own_redis_server() {
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
            "FAILED     merge conflict in step payments/3",
        ),
        (
            "search/batch/1",
            "FAILED     dead-lettered: merge backend unavailable while applying step search/1",
        ),
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
    let landed = stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("LANDED"))
        .count();
    assert_eq!(landed, 7, "{stdout}");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("payments/3") && l.contains("ERROR")));
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
    for args in [&["frobnicate"][..], &["run"], &["run", "sideways"]] {
        let out = keyway(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: keyway"));
    }
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
