//! The demo's wiring as separate long-lived `keyway run` processes on one Redis: the loop
//! completes across processes, and each stops cleanly on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyway::orchestrator::{BatchState, RequestState};
use keyway::stages::{app, demo, store::Store};
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend};

fn worker(url: &str, roles: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
        .arg("run")
        .args(roles)
        .env("REDIS_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyway run starts")
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
    let store = Store::new(backend.client().clone());
    let batches = demo::seed(&store).await.unwrap();

    let mut workers = vec![
        worker(&url, &["merge", "runway"]),
        worker(&url, &["mergesignal", "conclude", "speculate"]),
        worker(&url, &["reconcile"]),
        // A second merge/mergesignal process: two consumers per group.
        worker(&url, &["merge", "mergesignal"]),
    ];
    demo::submit(&backend, &batches).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    'wait: loop {
        assert!(
            Instant::now() < deadline,
            "the loop did not settle across processes"
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
        break;
    }
    for w in &mut workers {
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
