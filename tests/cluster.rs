//! The merge loop on a real local Redis Cluster (3 masters, 3 replicas): the demo pointed at
//! it, a slot range resharded under load, and a master killed under load with and without
//! `redis.wait_replicas`. Every batch must end terminal; what a failover lost or duplicated is
//! counted and printed.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use keyway::merge_service::{AnyMerger, FakeMerger};
use keyway::orchestrator::{BatchRef, BatchState, LandStrategy};
use keyway::stages::app::{self, Role};
use keyway::stages::store::Store;
use keyway::stages::submit::{hand_over, submit, NewRequest, SubmitError};
use keyway_runtime::json;
use keyway_runtime::redis::{EmbeddedCluster, EmbeddedOptions, RedisBackend, Shutdown};

const FAKE: AnyMerger = AnyMerger::Fake(FakeMerger);

/// Queues the batches are spread over: each queue's records and each topic's stream hash to
/// their own slots, so the load reaches every master.
const QUEUES: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];

/// One cluster test at a time: each starts six servers and loads them, and two at once on a
/// small machine make timing, not the code, the subject.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster(append_only: bool) -> EmbeddedCluster {
    EmbeddedCluster::start(
        3,
        1,
        EmbeddedOptions {
            append_only,
            ..Default::default()
        },
    )
    .expect("a local Redis Cluster starts")
}

fn uri(n: usize) -> String {
    format!("file:///srv/cluster.git/refs%2Fheads%2Fx/{n:040x}")
}

/// The roles in this process, on `url`, waiting for `wait_replicas` replicas per write.
struct Loop {
    backend: RedisBackend,
    store: Store,
    trigger: keyway_runtime::redis::ShutdownTrigger,
    tasks: tokio::task::JoinSet<Result<(), keyway_runtime::transport::TransportError>>,
}

impl Loop {
    async fn start(url: &str, wait_replicas: u32) -> Loop {
        let mut config = app::config(url);
        config.redis.wait_replicas = wait_replicas;
        config.redis.shutdown_deadline = Duration::from_secs(2);
        // A failover takes seconds: let retries span it rather than dead-letter at once.
        for sub in config.subscriptions.values_mut() {
            sub.visibility_timeout = Duration::from_secs(2);
        }
        let (backend, _) = RedisBackend::connect(config).await.expect("connects");
        let store = Store::new(&backend);
        let (trigger, shutdown) = Shutdown::new();
        let tasks = app::start(&backend, &Role::ALL, &FAKE, &shutdown);
        Loop {
            backend,
            store,
            trigger,
            tasks,
        }
    }

    async fn stop(mut self) {
        self.trigger.trigger();
        while let Some(done) = self.tasks.join_next().await {
            // A subscription may end with the error that stopped it; it must end.
            let _ = done.unwrap();
        }
    }
}

/// Submit `n` batches of two requests, spread over the queues; a submit that fails (the
/// cluster is failing over) is retried. Returns the batch ids.
async fn submit_many(l: &Loop, n: usize, from: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let queue = QUEUES[i % QUEUES.len()];
        let requests = [
            NewRequest {
                uris: vec![uri(2 * i)],
                strategy: LandStrategy::Rebase,
            },
            NewRequest {
                uris: vec![uri(2 * i + 1)],
                strategy: LandStrategy::SquashRebase,
            },
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut recorded = None;
        loop {
            let result = match &recorded {
                None => submit(&l.backend, &l.store, queue, &requests).await,
                Some(batch) => hand_over(&l.backend, batch).await.map(|()| batch.clone()),
            };
            match result {
                Ok(batch) => break ids.push(batch.id),
                Err(SubmitError::Invalid(e)) => panic!("{e}"),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("submit retried: {e}");
                    if let SubmitError::Publish(batch, _) = e {
                        recorded = Some(*batch);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("submit failed for 30 s: {e}"),
            }
        }
    }
    ids
}

/// How the batches ended.
#[derive(Debug, Default)]
struct Ending {
    succeeded: usize,
    failed: usize,
    /// Not terminal when the wait ended.
    stuck: Vec<String>,
    /// Batches concluded more than once (by distinct messages: a message published twice
    /// with one id is one entry).
    concluded_twice: usize,
}

async fn states(l: &Loop, ids: &[String]) -> BTreeMap<String, BatchState> {
    let mut out = BTreeMap::new();
    for id in ids {
        // A read the client cannot serve now counts as not terminal yet, without waiting for
        // the client's own command timeout.
        let read = tokio::time::timeout(Duration::from_secs(1), l.store.batch(id)).await;
        if let Ok(Ok(Some(batch))) = read {
            out.insert(id.clone(), batch.state());
        }
    }
    out
}

/// Wait until every batch is terminal (or `timeout`), then count.
async fn ending(l: &Loop, ids: &[String], timeout: Duration) -> Ending {
    let deadline = Instant::now() + timeout;
    let terminal = |s: &BatchState| matches!(s, BatchState::Succeeded | BatchState::Failed);
    let mut now = states(l, ids).await;
    while now.values().filter(|s| terminal(s)).count() < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = states(l, ids).await;
    }
    let mut ending = Ending::default();
    for id in ids {
        match now.get(id) {
            Some(BatchState::Succeeded) => ending.succeeded += 1,
            Some(BatchState::Failed) => ending.failed += 1,
            _ => ending.stuck.push(id.clone()),
        }
    }
    let mut concluded: BTreeMap<String, usize> = BTreeMap::new();
    for stored in l.backend.peek("conclude", 100_000).await.unwrap() {
        let batch: BatchRef = json::from_slice(&stored.payload).unwrap();
        *concluded.entry(batch.id).or_default() += 1;
    }
    ending.concluded_twice = concluded.values().filter(|n| **n > 1).count();
    ending
}

#[test]
fn the_demo_runs_on_a_cluster() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    let cluster = cluster(false);
    let out = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .arg("demo")
        .env("REDIS_URL", cluster.url())
        .output()
        .expect("the keyway binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().last(),
        Some("6 batches: 4 succeeded, 2 failed as seeded; 0 unexpected"),
        "{stdout}"
    );
    // Its keys are on every master.
    for master in cluster.masters().unwrap() {
        let keys = cluster.command(master, &["DBSIZE"]).unwrap();
        let n: u64 = keys.trim().parse().unwrap();
        assert!(n > 0, "the master on {master} holds no key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = std::sync::Arc::new(cluster(false));
    let l = Loop::start(&cluster.url(), 0).await;
    let masters = cluster.masters().unwrap();
    let first = submit_many(&l, 24, 0).await;
    // Move a third of the first master's slots to the second, and back, while the batches
    // run and more are submitted.
    let moving = cluster.clone();
    let reshard = tokio::task::spawn_blocking(move || {
        moving.reshard(masters[0], masters[1], 1800)?;
        moving.reshard(masters[1], masters[0], 1800)
    });
    let second = submit_many(&l, 24, 24).await;
    reshard.await.unwrap().expect("the reshards complete");
    let ids: Vec<String> = first.into_iter().chain(second).collect();
    let ending = ending(&l, &ids, Duration::from_secs(60)).await;
    println!("resharding 2 × 1800 slots under 48 batches: {ending:?}");
    l.stop().await;
    assert!(ending.stuck.is_empty(), "{ending:?}");
    // The fake merger lands everything: a failure would be a lost or refused step.
    assert_eq!(ending.succeeded, ids.len(), "{ending:?}");
    assert_eq!(ending.concluded_twice, 0, "{ending:?}");
}

/// Kill the master serving the most keys while batches run; returns how they ended.
async fn kill_a_master_under_load(wait_replicas: u32) -> (Ending, usize) {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = cluster(true);
    let l = Loop::start(&cluster.url(), wait_replicas).await;
    let first = submit_many(&l, 24, 0).await;
    let masters = cluster.masters().unwrap();
    let busiest = *masters
        .iter()
        .max_by_key(|port| {
            cluster
                .command(**port, &["DBSIZE"])
                .ok()
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .unwrap();
    let promoted = tokio::task::block_in_place(|| {
        cluster
            .kill_master(busiest, Duration::from_secs(30))
            .expect("a replica takes over")
    });
    println!("killed the master on {busiest}; {promoted} took over");
    // Back as the new master's replica: until then, writes to that shard cannot reach a
    // replica, and with `wait_replicas` they wait (retried) rather than risk being lost.
    tokio::task::block_in_place(|| {
        cluster.restart(busiest).expect("the old master restarts");
        cluster
            .wait_healthy(Duration::from_secs(30))
            .expect("it rejoins as a replica");
    });
    let second = submit_many(&l, 24, 24).await;
    let ids: Vec<String> = first.into_iter().chain(second).collect();
    let ending = ending(&l, &ids, Duration::from_secs(60)).await;
    l.stop().await;
    (ending, ids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_with_wait_loses_no_batch() {
    let (ending, n) = kill_a_master_under_load(1).await;
    println!("a master killed under {n} batches, wait_replicas = 1: {ending:?}");
    assert!(ending.stuck.is_empty(), "{ending:?}");
    assert_eq!(ending.succeeded + ending.failed, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_without_wait() {
    let (ending, n) = kill_a_master_under_load(0).await;
    println!("a master killed under {n} batches, wait_replicas = 0: {ending:?}");
    assert_eq!(ending.succeeded + ending.failed + ending.stuck.len(), n);
    // Without WAIT, what the dead master acknowledged but had not replicated is gone, so a
    // batch whose step was lost can stay where it was (the run prints how many). Only the
    // batches submitted before the kill can be among them: those after went to the new
    // master.
    assert!(
        ending.stuck.iter().all(|id| {
            let n: usize = id.rsplit('/').next().unwrap().parse().unwrap();
            n <= 24usize.div_ceil(QUEUES.len())
        }),
        "{ending:?}"
    );
}
