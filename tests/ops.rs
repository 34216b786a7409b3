//! `keyway run` as an operator runs it: started before Redis, logging JSON for a shipper,
//! scraped for metrics.

mod support;

use std::time::{Duration, Instant};

use keyway::orchestrator::BatchRef;
use keyway::stages::{app, fixture, store::Store};
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend};
use keyway_runtime::transport::{MessageId, OutgoingMessage, Publisher};
use support::{config_file, http, json, number, text, Keyway};

/// A server with a user `app` (password `hunter2`) besides the default one.
fn options_with_app_user() -> EmbeddedOptions {
    EmbeddedOptions {
        append_only: false,
        extra_args: ["--user", "app", "on", ">hunter2", "~*", "&*", "+@all"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_waits_for_redis_then_works_and_logs_json_without_the_password() {
    let mut server = EmbeddedRedis::start(options_with_app_user()).unwrap();
    let port = server.port();
    server.kill();
    let config = config_file("ops-wait", "");
    let url = format!("redis://app:hunter2@127.0.0.1:{port}");
    let mut merge = Keyway::start(
        &["run", "merge", "--log-format", "json"],
        &[
            ("REDIS_URL", &url),
            ("KEYWAY_CONFIG", config.to_str().unwrap()),
        ],
    );

    // Redis is down: it says so, and keeps trying.
    let shown = format!("redis://app:***@127.0.0.1:{port}");
    let waiting = merge.wait_for(
        "that Redis is not reachable",
        Duration::from_secs(20),
        |l| l.contains("not reachable"),
    );
    let waiting = json(&waiting);
    assert_eq!(text(&waiting, &["level"]), Some("WARN"), "{waiting:?}");
    assert_eq!(
        text(&waiting, &["message"]),
        Some(
            format!("Redis at {shown} not reachable (connection refused); retrying in 500ms")
                .as_str()
        ),
    );
    merge.wait_for("a second attempt", Duration::from_secs(20), |l| {
        l.contains("not reachable (connection refused); retrying in 1s")
    });

    // Redis comes up: the role starts and does its work, with no one restarting it.
    server.restart().unwrap();
    merge.wait_for("that the role runs", Duration::from_secs(30), |l| {
        l.contains(&format!("running merge against {shown}"))
    });
    let (backend, _) = RedisBackend::connect(app::config(&server.url()))
        .await
        .unwrap();
    let store = Store::new(&backend);
    let batches = fixture::seed(&store).await.unwrap();
    fixture::submit(&backend, &batches).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend.peek("runway-merge", 100).await.unwrap().len() < batches.len() {
        assert!(
            Instant::now() < deadline,
            "the merge stage did not hand every batch to Runway; it said:\n{}",
            merge.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let status = merge.terminate();
    assert!(status.success(), "{status}: {}", merge.lines().join("\n"));
    // Every line is a JSON object with a level and a message, and none shows the password.
    for line in merge.lines() {
        assert!(!line.contains("hunter2"), "{line}");
        let object = json(line);
        assert!(
            matches!(
                text(&object, &["level"]),
                Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
            ),
            "{line}"
        );
        assert!(text(&object, &["message"]).is_some(), "{line}");
        assert!(text(&object, &["timestamp"]).is_some(), "{line}");
    }
    assert!(
        merge
            .lines()
            .iter()
            .any(|l| l.contains("SIGTERM: stopping")),
        "{:?}",
        merge.lines()
    );
}

#[test]
fn the_demo_waits_for_the_redis_it_is_pointed_at() {
    let mut server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .unwrap();
    let url = server.url();
    server.kill();
    let mut demo = Keyway::start(&["demo"], &[("REDIS_URL", &url)]);
    demo.wait_for(
        "that Redis is not reachable",
        Duration::from_secs(20),
        |l| {
            l.contains(&format!(
                "Redis at {url} not reachable (connection refused); retrying in"
            ))
        },
    );
    server.restart().unwrap();
    let status = demo.wait_exit(Duration::from_secs(120));
    let stdout = demo.stdout();
    assert!(
        status.success(),
        "{status}\n{stdout}\n{}",
        demo.lines().join("\n")
    );
    assert_eq!(
        stdout.lines().last(),
        Some("6 batches: 4 succeeded, 2 failed as seeded; 0 unexpected"),
        "{stdout}"
    );
}

#[test]
fn run_stops_on_sigterm_while_it_waits_for_redis() {
    let url = format!("redis://127.0.0.1:{}", support::closed_port());
    let mut merge = Keyway::start(&["run", "merge"], &[("REDIS_URL", &url)]);
    merge.wait_for(
        "that Redis is not reachable",
        Duration::from_secs(20),
        |l| {
            l.contains(&format!(
                "Redis at {url} not reachable (connection refused); retrying in"
            )) && l.contains(" WARN ")
        },
    );
    let status = merge.terminate();
    assert!(status.success(), "{status}");
    assert!(
        merge
            .lines()
            .iter()
            .any(|l| l.contains("SIGTERM before Redis was reachable: stopping")),
        "{:?}",
        merge.lines()
    );
}

#[test]
fn what_waiting_cannot_fix_fails_at_once() {
    let server = EmbeddedRedis::start(options_with_app_user()).unwrap();
    let wrong_password = format!("redis://app:hunter3@127.0.0.1:{}", server.port());
    for (url, says) in [
        ("http://127.0.0.1:6379", "is not a Redis URL scheme"),
        (
            wrong_password.as_str(),
            "cannot connect to Redis at redis://app:***@",
        ),
    ] {
        let mut merge = Keyway::start(&["run", "merge"], &[("REDIS_URL", url)]);
        let status = merge.wait_exit(Duration::from_secs(20));
        let said = merge.lines().join("\n");
        assert_eq!(status.code(), Some(1), "{url}: {said}");
        assert!(said.contains(says), "{url}: {said}");
        assert!(!said.contains("not reachable"), "{url}: {said}");
        assert!(!said.contains("hunter3"), "{said}");
    }
    // A bad log filter is a configuration error too.
    let mut merge = Keyway::start(
        &["run", "merge"],
        &[("REDIS_URL", &server.url()), ("KEYWAY_LOG", "keyway=loud")],
    );
    assert_eq!(merge.wait_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(
        merge
            .lines()
            .join("\n")
            .contains("KEYWAY_LOG \"keyway=loud\" is not a log filter"),
        "{:?}",
        merge.lines()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .unwrap();
    let url = server.url();
    let config = config_file("ops-metrics", "");
    let mut merge = Keyway::start(
        &[
            "run",
            "merge",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        &[
            ("REDIS_URL", &url),
            ("KEYWAY_CONFIG", config.to_str().unwrap()),
        ],
    );
    let serving = json(
        &merge.wait_for("where metrics are", Duration::from_secs(20), |l| {
            l.contains("serving metrics on http://")
        }),
    );
    let addr = text(&serving, &["addr"])
        .expect("the address is a field")
        .to_owned();
    merge.wait_for("that the role runs", Duration::from_secs(20), |l| {
        l.contains("running merge against")
    });

    // A batch of a queue nobody knows: the merge stage rejects it, and it is dead-lettered.
    let (backend, _) = RedisBackend::connect(app::config(&url)).await.unwrap();
    let unknown = BatchRef {
        id: "nowhere/batch/1".into(),
        queue: "nowhere".into(),
        ..Default::default()
    };
    backend
        .publish(
            "submitqueue-merge",
            OutgoingMessage {
                id: MessageId::new("nowhere/batch/1/merge").unwrap(),
                partition_key: "nowhere".into(),
                payload: keyway_runtime::json::to_vec(&unknown).unwrap(),
                metadata: Default::default(),
            },
        )
        .await
        .unwrap();
    let dead =
        "keyway_dead_letters_total{topic=\"submitqueue-merge\",group=\"orchestrator-merge\"} 1\n";
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, headers, body) = loop {
        let (status, headers, body) = http(&addr, "GET", "/metrics");
        if body.contains(dead) {
            break (status, headers, body);
        }
        assert!(Instant::now() < deadline, "no dead letter counted:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200);
    assert!(
        headers.contains(&(
            "content-type".to_owned(),
            "text/plain; version=0.0.4; charset=utf-8".to_owned()
        )),
        "{headers:?}"
    );
    for expected in [
        "keyway_ready 1\n",
        "# TYPE keyway_deliveries_total counter\n",
        "keyway_deliveries_total{topic=\"submitqueue-merge\",group=\"orchestrator-merge\",outcome=\"reject\"} 1\n",
        "# TYPE keyway_handler_seconds histogram\n",
    ] {
        assert!(body.contains(expected), "{expected}\n{body}");
    }
    assert_eq!(http(&addr, "GET", "/").0, 404);
    assert_eq!(http(&addr, "GET", "/metrics/more").0, 404);
    let (status, headers, _) = http(&addr, "POST", "/metrics");
    assert_eq!(status, 405);
    assert!(
        headers.contains(&("allow".to_owned(), "GET, HEAD".to_owned())),
        "{headers:?}"
    );
    assert!(merge.terminate().success());
}

#[test]
fn the_metrics_endpoint_answers_while_redis_is_not_there_yet() {
    let url = format!("redis://127.0.0.1:{}", support::closed_port());
    let mut merge = Keyway::start(
        &[
            "run",
            "merge",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        &[("REDIS_URL", &url)],
    );
    let serving = json(
        &merge.wait_for("where metrics are", Duration::from_secs(20), |l| {
            l.contains("serving metrics on http://")
        }),
    );
    let addr = text(&serving, &["addr"]).unwrap().to_owned();
    merge.wait_for(
        "that Redis is not reachable",
        Duration::from_secs(20),
        |l| l.contains("not reachable"),
    );
    let (status, _, body) = http(&addr, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(body.ends_with("keyway_ready 0\n"), "{body}");
    assert!(merge.terminate().success());
    // A taken address is a configuration error, found before any waiting.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let mut second = Keyway::start(
        &["run", "merge", "--metrics-addr", &taken],
        &[("REDIS_URL", &url)],
    );
    assert_eq!(second.wait_exit(Duration::from_secs(20)).code(), Some(1));
    let said = second.lines().join("\n");
    assert!(
        said.contains(&format!("cannot serve metrics on {taken}")),
        "{said}"
    );
    assert!(!said.contains("not reachable"), "{said}");
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_about_a_delivery_carries_its_context_at_any_log_level() {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .unwrap();
    let url = server.url();
    let (backend, _) = RedisBackend::connect(app::config(&url)).await.unwrap();
    // A dead letter nobody can handle: parked, with a warning.
    backend
        .publish(
            "merge-signal_dlq",
            OutgoingMessage {
                id: MessageId::new("garbage-1").unwrap(),
                partition_key: "payments".into(),
                payload: b"not json".to_vec(),
                metadata: [("dlq.last_error".to_owned(), "boom".to_owned())].into(),
            },
        )
        .await
        .unwrap();
    let config = config_file("ops-context", "");
    let mut reconcile = Keyway::start(
        &["run", "reconcile", "--log-format", "json"],
        &[
            ("REDIS_URL", &url),
            ("KEYWAY_CONFIG", config.to_str().unwrap()),
            ("KEYWAY_LOG", "warn"),
        ],
    );
    let parked = json(
        &reconcile.wait_for("that it parked", Duration::from_secs(30), |l| {
            l.contains("dead letter parked for an operator")
        }),
    );
    assert_eq!(text(&parked, &["level"]), Some("WARN"));
    assert_eq!(text(&parked, &["span", "name"]), Some("delivery"));
    assert_eq!(text(&parked, &["span", "topic"]), Some("merge-signal_dlq"));
    assert_eq!(
        text(&parked, &["span", "group"]),
        Some("orchestrator-reconcile")
    );
    assert_eq!(text(&parked, &["span", "id"]), Some("garbage-1"));
    assert_eq!(text(&parked, &["span", "partition_key"]), Some("payments"));
    assert_eq!(number(&parked, &["span", "attempt"]), Some(1.0));
    assert!(reconcile.terminate().success());
    // The filter held: nothing below WARN.
    for line in reconcile.lines() {
        assert!(
            matches!(text(&json(line), &["level"]), Some("WARN" | "ERROR")),
            "{line}"
        );
    }
}
