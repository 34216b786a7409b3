//! Each role as a Redis user with exactly the rules `keyway acl` prints: the loop still works,
//! Redis refused nothing it needed, and a role cannot write what is not its to write.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway::orchestrator::{BatchState, RequestState};
use keyway::stages::{app, fixture, store::Store};
use keyway_runtime::redis::{Config, EmbeddedOptions, EmbeddedRedis, RedisBackend};
use keyway_runtime::transport::{MessageId, OutgoingMessage, Publisher};
use support::{config_file, Keyway};

const ROLES: [&str; 6] = [
    "merge",
    "mergesignal",
    "runway",
    "reconcile",
    "conclude",
    "speculate",
];

async fn command(backend: &RedisBackend, args: &[&str]) -> Result<Value, fred::error::Error> {
    let (name, rest) = args.split_first().unwrap();
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    backend
        .client()
        .custom(
            CustomCommand::new_static(name, ClusterHash::FirstKey, false),
            rest.iter().map(|a| Value::from(*a)).collect::<Vec<_>>(),
        )
        .await
}

fn password(role: &str) -> String {
    format!("pw-{role}-secret")
}

/// `keyway acl --role <role>` with `config`: the printed line.
fn printed(role: &str, config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["acl", "--role", role])
        .env("KEYWAY_CONFIG", config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    stdout.trim_end().to_owned()
}

/// Connect as `role`'s user.
async fn as_user(port: u16, role: &str, config: &Config) -> RedisBackend {
    let mut config = config.clone();
    config.redis.url = format!("redis://keyway-{role}:{}@127.0.0.1:{port}", password(role));
    RedisBackend::connect(config).await.unwrap().0
}

/// The entries of `ACL LOG` as (username, reason, object).
async fn acl_log(admin: &RedisBackend) -> Vec<(String, String, String)> {
    let log = command(admin, &["ACL", "LOG", "1000"]).await.unwrap();
    let mut out = Vec::new();
    for entry in log.into_array() {
        let fields = entry.into_array();
        let get = |name: &str| {
            fields
                .chunks(2)
                .find(|kv| kv[0].as_string().as_deref() == Some(name))
                .and_then(|kv| kv.get(1).and_then(Value::as_string))
                .unwrap_or_default()
        };
        out.push((get("username"), get("reason"), get("object")));
    }
    out
}

fn refused(result: Result<Value, fred::error::Error>, what: &str) {
    match result {
        Ok(v) => panic!("{what} was allowed: {v:?}"),
        Err(e) => assert!(e.to_string().contains("NOPERM"), "{what}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_works_as_a_user_with_exactly_its_printed_rules() {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .unwrap();
    let port = server.port();
    // Trims and group upkeep run often, so their commands are exercised too.
    let path = config_file(
        "acl",
        "[redis]\ntrim_interval = \"100ms\"\nconsumer_idle_removal = \"1s\"\n",
    );
    let config = app::load_config(&path, Some(&server.url())).unwrap();
    let (admin, _) = RedisBackend::connect(config.clone()).await.unwrap();

    for role in ROLES.iter().chain(&["submit", "inspect"]) {
        let line = printed(role, &path);
        let user = format!("keyway-{role}");
        assert!(line.starts_with(&format!("ACL SETUSER {user} ")), "{line}");
        let args: Vec<&str> = line.split_whitespace().collect();
        command(&admin, &args)
            .await
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        command(
            &admin,
            &["ACL", "SETUSER", &user, &format!(">{}", password(role))],
        )
        .await
        .unwrap();
    }
    command(&admin, &["ACL", "LOG", "RESET"]).await.unwrap();

    // The batches go in through the submit role's user.
    let submitter = as_user(port, "submit", &config).await;
    let batches = fixture::seed(&Store::new(&submitter)).await.unwrap();
    let url_of = |role: &str| format!("redis://keyway-{role}:{}@127.0.0.1:{port}", password(role));
    let mut workers: Vec<(&str, Keyway)> = ROLES
        .iter()
        .map(|role| {
            let url = url_of(role);
            let worker = Keyway::start(
                &["run", role, "--metrics-addr", "127.0.0.1:0"],
                &[
                    ("REDIS_URL", &url),
                    ("KEYWAY_CONFIG", path.to_str().unwrap()),
                ],
            );
            (*role, worker)
        })
        .collect();
    let mut metrics = Vec::new();
    for (role, worker) in &mut workers {
        let serving = worker.wait_for("where metrics are", Duration::from_secs(30), |l| {
            l.contains("serving metrics on http://")
        });
        let addr = serving
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split("/metrics").next())
            .unwrap()
            .to_owned();
        metrics.push(addr);
        worker.wait_for("that the role runs", Duration::from_secs(30), |l| {
            l.contains(&format!("running {role} against"))
        });
    }
    fixture::submit(&submitter, &batches).await.unwrap();

    let store = Store::new(&admin);
    let said = |workers: &[(&str, Keyway)]| {
        workers
            .iter()
            .map(|(role, w)| format!("--- {role}\n{}", w.lines().join("\n")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    'wait: loop {
        assert!(
            Instant::now() < deadline,
            "the loop did not settle; Redis refused {:?}; the workers said:\n{}",
            acl_log(&admin).await,
            said(&workers)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        for b in &batches {
            let batch = store.batch(&b.id).await.unwrap().unwrap();
            if !matches!(batch.state(), BatchState::Succeeded | BatchState::Failed) {
                continue 'wait;
            }
            for r in &batch.contains {
                if store.request(r).await.unwrap().unwrap().state() == RequestState::Queued {
                    continue 'wait;
                }
            }
        }
        if store.speculations("payments").await.unwrap().len() < 3 {
            continue 'wait;
        }
        break;
    }
    let mut failed = Vec::new();
    for b in &batches {
        if store.batch(&b.id).await.unwrap().unwrap().state() == BatchState::Failed {
            failed.push(b.id.clone());
        }
    }
    assert_eq!(failed, ["payments/batch/2", "search/batch/1"]);
    // Every subscription has looked after its group (right after trimming its stream) under
    // its user's rules: each reports the group's health.
    for ((role, _), addr) in workers.iter().zip(&metrics) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, _, body) = support::http(addr, "GET", "/metrics");
            if body.contains("keyway_group_consumers{") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{role} never tended its groups:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The command-line clients work as theirs.
    let keyway = |role: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keyway"))
            .args(args)
            .env("REDIS_URL", url_of(role))
            .env("KEYWAY_CONFIG", &path)
            .output()
            .unwrap()
    };
    let status = keyway("inspect", &["status", "payments/batch/1"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        stdout.starts_with("payments/batch/1  SUCCEEDED"),
        "{stdout}"
    );
    assert!(keyway("inspect", &["dlq", "list"]).status.success());
    let submitted = keyway(
        "submit",
        &[
            "submit",
            "--queue",
            "billing",
            "git://git.example.com/billing/refs%2Fheads%2Fx/0123456789abcdef0123456789abcdef01234567",
        ],
    );
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    // Redis refused nothing but what the rules leave out on purpose: CONFIG GET, which the
    // start-up check tries and does without.
    let refusals: Vec<_> = acl_log(&admin)
        .await
        .into_iter()
        .filter(|(_, _, object)| object != "config|get")
        .collect();
    assert!(refusals.is_empty(), "{refusals:?}\n{}", said(&workers));

    // A role cannot write what is not its to write.
    let merge = as_user(port, "merge", &config).await;
    refused(
        command(
            &merge,
            &[
                "XADD",
                "kw:{merge-signal}:s:merge-signal",
                "*",
                "id",
                "payments/batch/3",
                "pk",
                "payments",
                "at",
                "0",
                "payload",
                "{}",
            ],
        )
        .await,
        "the merge role forging a merge-signal entry",
    );
    let forged = merge
        .publish(
            "merge-signal",
            OutgoingMessage {
                id: MessageId::new("forged-1").unwrap(),
                partition_key: "payments".into(),
                payload: b"{\"id\":\"payments/batch/3\",\"outcome\":\"SUCCEEDED\"}".to_vec(),
                metadata: Default::default(),
            },
        )
        .await;
    let e = forged.expect_err("the merge role published on merge-signal");
    assert!(e.to_string().contains("NOPERM"), "{e}");
    refused(
        command(
            &merge,
            &["HSET", "kw:st:{payments}:batch:payments/batch/3", "v", "9"],
        )
        .await,
        "the merge role writing a batch record",
    );
    let runway = as_user(port, "runway", &config).await;
    refused(
        command(
            &runway,
            &[
                "XADD",
                "kw:{submitqueue-merge}:s:submitqueue-merge",
                "*",
                "id",
                "x",
                "pk",
                "payments",
                "at",
                "0",
                "payload",
                "{}",
            ],
        )
        .await,
        "Runway writing submitqueue-merge",
    );
    refused(
        command(
            &runway,
            &["HGET", "kw:st:{payments}:batch:payments/batch/1", "d"],
        )
        .await,
        "Runway reading the orchestrator's records",
    );
    let conclude = as_user(port, "conclude", &config).await;
    refused(
        command(
            &conclude,
            &["HSET", "kw:st:{payments}:batch:payments/batch/2", "v", "9"],
        )
        .await,
        "the conclude role writing a batch record",
    );
    let inspect = as_user(port, "inspect", &config).await;
    refused(
        command(&inspect, &["SADD", "kw:st:queues", "sneaky"]).await,
        "the inspect role writing",
    );
    refused(
        command(&inspect, &["CONFIG", "GET", "requirepass"]).await,
        "reading the server's configuration",
    );

    for (role, worker) in &mut workers {
        let status = worker.terminate();
        assert!(
            status.success(),
            "{role}: {status}\n{}",
            worker.lines().join("\n")
        );
    }
}

#[test]
fn the_rules_follow_the_key_prefix_and_streams_of_the_config() {
    let path = config_file("acl-prefix", "[redis]\nkey_prefix = \"shop\"\n");
    let line = printed("runway", &path);
    assert!(
        line.contains(" ~shop:{merge-signal}:s:merge-signal "),
        "{line}"
    );
    assert!(!line.contains("kw:"), "{line}");
    // One user for a process running several roles; rules only on request.
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args([
            "acl",
            "--role",
            "merge,runway",
            "--user",
            "loop",
            "--rules-only",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("+"), "{stdout}");
    for key in [
        "~kw:{merge-signal}:s:merge-signal",
        "%R~kw:st:*",
        "~kw:{submitqueue-merge}:s:submitqueue-merge",
    ] {
        assert!(
            stdout.split_whitespace().any(|r| r == key),
            "{key}: {stdout}"
        );
    }
    let all = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["acl", "--role", "all"])
        .output()
        .unwrap();
    let users: Vec<String> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(users, ROLES.map(|r| format!("keyway-{r}")));
}
