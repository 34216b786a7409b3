//! The demo's wiring as separate long-lived `keyway run` processes on one Redis: the loop
//! completes across processes, and each stops cleanly on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyway::orchestrator::{BatchState, RequestState};
use keyway::stages::{app, fixture, store::Store};
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend};

/// Every stage topic on its own stream, and the fake merger: these tests are about the
/// processes, not git.
/// Written once per test process: workers read it while others start.
fn config() -> &'static std::path::Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("keyway-processes-{}.toml", std::process::id()));
        let mut text = String::from("[runway]\nmerger = \"fake\"\n\n[topics]\n");
        for (key, stream) in app::registry().iter() {
            text.push_str(&format!("{key} = \"{stream}\"\n"));
        }
        std::fs::write(&path, text).unwrap();
        path
    })
}

fn worker(url: &str, roles: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
        .arg("run")
        .args(roles)
        .env("REDIS_URL", url)
        .env("KEYWAY_CONFIG", config())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyway run starts")
}

/// Worker processes, killed if the test ends before stopping them (they would wait for their
/// Redis forever).
struct Workers(Vec<Child>);

impl std::ops::Deref for Workers {
    type Target = Vec<Child>;
    fn deref(&self) -> &Vec<Child> {
        &self.0
    }
}

impl std::ops::DerefMut for Workers {
    fn deref_mut(&mut self) -> &mut Vec<Child> {
        &mut self.0
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            if matches!(w.try_wait(), Ok(None)) {
                let _ = w.kill();
                let _ = w.wait();
            }
        }
    }
}

/// What a killed worker wrote to stderr.
trait StderrOf {
    fn wait_with_output_ref(&mut self) -> String;
}

impl StderrOf for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut text = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_runs_across_worker_processes_and_stops_on_sigterm() {
    let server = EmbeddedRedis::start(EmbeddedOptions::default()).unwrap();
    let url = server.url();
    let (backend, _) = RedisBackend::connect(app::config(&url)).await.unwrap();
    let store = Store::new(&backend);
    let batches = fixture::seed(&store).await.unwrap();

    let mut workers = Workers(vec![
        worker(&url, &["merge", "runway"]),
        worker(&url, &["mergesignal", "conclude", "speculate"]),
        worker(&url, &["reconcile"]),
        // A second merge/mergesignal process: two consumers per group.
        worker(&url, &["merge", "mergesignal"]),
    ]);
    fixture::submit(&backend, &batches).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    'wait: loop {
        if Instant::now() > deadline {
            let mut logs = String::new();
            for w in workers.iter_mut() {
                let _ = w.kill();
                let out = w.wait_with_output_ref();
                logs.push_str(&out);
            }
            panic!("the loop did not settle across processes; the workers said:\n{logs}");
        }
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
        break;
    }
    for w in workers.iter_mut() {
        let status = terminate(w);
        assert!(status.success(), "a worker exited with {status}");
    }
    let outcomes: Vec<(String, BatchState)> = {
        let mut out = Vec::new();
        for b in &batches {
            out.push((
                b.id.clone(),
                store.batch(&b.id).await.unwrap().unwrap().state(),
            ));
        }
        out
    };
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, s)| *s == BatchState::Failed)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        failed,
        ["payments/batch/2", "search/batch/1"],
        "{outcomes:?}"
    );
    assert_eq!(
        store.speculations("payments").await.unwrap(),
        ["payments/batch/1", "payments/batch/2", "payments/batch/3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_shows_what_the_reconcilers_parked() {
    use keyway_runtime::transport::{MessageId, OutgoingMessage, Publisher};
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .unwrap();
    let url = server.url();
    let (backend, _) = RedisBackend::connect(app::config(&url)).await.unwrap();
    // A dead letter nobody can handle: its payload is not a MergeResult.
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
    let mut reconciler = worker(&url, &["reconcile"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while backend.peek("parked", 10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "nothing was parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(terminate(&mut reconciler).success());
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["dlq", "list"])
        .env("REDIS_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("topic=merge-signal_dlq id=\"garbage-1\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("payload does not decode as keyway.runway.messagequeue.MergeResult"),
        "{stdout}"
    );
}
