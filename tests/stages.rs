//! Every branch of the merge and mergesignal stages, the reconcilers and the responder, on a
//! real `redis-server` of each test's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway::base::mergestrategy::Strategy;
use keyway::merge_service::{AnyMerger, FakeMerger};
use keyway::orchestrator::{Batch, BatchRef, BatchState, LandStrategy, Request, RequestState};
use keyway::runway::messagequeue::{
    MergeRequest, MergeResult, Outcome as MergeOutcome, StepOutput, StepResult,
};
use keyway::stages::app::{self, Role};
use keyway::stages::orchestrator::{ConcludeStage, MergeSignalStage, MergeStage, Outbox};
use keyway::stages::reconcile::{BatchReconciler, Parking};
use keyway::stages::store::{Store, StoreError};
use keyway::topics::TopicKey;
use keyway_runtime::json;
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown};
use keyway_runtime::stub::{Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{
    BoxFuture, Delivery, Handler, Lease, MessageId, Metadata, Outcome, TransportError,
};

const FAKE: AnyMerger = AnyMerger::Fake(FakeMerger);

struct Env {
    backend: RedisBackend,
    store: Store,
    outbox: Outbox,
    _server: EmbeddedRedis,
}

async fn env_with(registry: Registry) -> Env {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts");
    let mut config = app::config(&server.url());
    config.registry = registry;
    config.redis.shutdown_deadline = Duration::from_secs(2);
    let (backend, _) = RedisBackend::connect(config).await.unwrap();
    let store = Store::new(backend.client().clone());
    let outbox = Outbox::new(&backend);
    Env {
        backend,
        store,
        outbox,
        _server: server,
    }
}

async fn env() -> Env {
    env_with(app::registry()).await
}

/// Every topic but `missing`.
fn registry_without(missing: &str) -> Registry {
    let keys: Vec<String> = app::registry()
        .iter()
        .map(|(k, _)| k.to_owned())
        .filter(|k| k != missing)
        .collect();
    Registry::identity(keys.iter().map(String::as_str)).unwrap()
}

struct NoLease;
impl Lease for NoLease {
    fn extend(&self, _: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }
}

fn delivery(topic: &str, payload: Vec<u8>, metadata: Metadata) -> Delivery {
    Delivery {
        topic: topic.into(),
        id: "test".into(),
        partition_key: "payments".into(),
        payload,
        metadata,
        published_at_ms: 0,
        attempt: 1,
        lease: Arc::new(NoLease),
    }
}

/// Batch `payments/batch/1` with requests `payments/1` (squash_rebase) and `payments/2`
/// (unset), in `state`.
async fn seed(store: &Store, state: BatchState) -> Batch {
    let mut requests = vec![
        Request {
            id: "payments/1".into(),
            queue: "payments".into(),
            uris: vec![
                "git://h/pay/main/aaaa".into(),
                "git://h/pay/main/bbbb".into(),
            ],
            strategy: LandStrategy::SquashRebase as i32,
            state: RequestState::Queued as i32,
            ..Default::default()
        },
        Request {
            id: "payments/2".into(),
            queue: "payments".into(),
            uris: vec!["git://h/pay/main/cccc".into()],
            state: RequestState::Queued as i32,
            ..Default::default()
        },
    ];
    let mut batch = Batch {
        id: "payments/batch/1".into(),
        queue: "payments".into(),
        contains: requests.iter().map(|r| r.id.clone()).collect(),
        state: state as i32,
        ..Default::default()
    };
    store.create(&mut batch, &mut requests).await.unwrap();
    batch
}

fn batch_ref(id: &str, queue: &str) -> Vec<u8> {
    json::to_vec(&BatchRef {
        id: id.into(),
        queue: queue.into(),
    })
    .unwrap()
}

fn result(outcome: MergeOutcome, reason: &str) -> MergeResult {
    MergeResult {
        id: "payments/batch/1".into(),
        outcome: outcome as i32,
        reason: reason.into(),
        steps: vec![StepResult {
            step_id: "payments/1".into(),
            outputs: vec![StepOutput {
                id: "ab".repeat(20),
            }],
            reason: String::new(),
        }],
        queue_name: "payments".into(),
    }
}

async fn merge(e: &Env, payload: Vec<u8>) -> Result<Handled, HandlerError> {
    let stage = MergeStage {
        store: e.store.clone(),
        outbox: e.outbox.clone(),
    };
    let r: BatchRef = json::from_slice(&payload).unwrap();
    TopicHandler::<keyway::orchestrator::topics::SubmitqueueMerge>::handle(
        &stage,
        r,
        &delivery("submitqueue-merge", payload, Metadata::new()),
    )
    .await
}

async fn signal(e: &Env, r: MergeResult) -> Result<Handled, HandlerError> {
    let stage = MergeSignalStage {
        store: e.store.clone(),
        outbox: e.outbox.clone(),
    };
    let payload = json::to_vec(&r).unwrap();
    TopicHandler::<keyway::topics::MergeSignal>::handle(
        &stage,
        r,
        &delivery("merge-signal", payload, Metadata::new()),
    )
    .await
}

/// The seeded batch, as stored now.
async fn the_batch(e: &Env) -> Batch {
    e.store.batch("payments/batch/1").await.unwrap().unwrap()
}

/// Batches of queue `payments` in `state`, by the membership records.
async fn in_state(e: &Env, state: BatchState) -> Vec<String> {
    e.store.batches_in("payments", state).await.unwrap()
}

async fn ids(e: &Env, topic: &str) -> Vec<String> {
    e.backend
        .peek(topic, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_hands_a_ready_batch_to_runway_after_logging_each_member() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    merge(&e, batch_ref("payments/batch/1", "payments"))
        .await
        .unwrap();
    assert_eq!(
        ids(&e, "log").await,
        [
            "payments/1/landing/payments/batch/1",
            "payments/2/landing/payments/batch/1"
        ]
    );
    let sent = e.backend.peek("runway-merge", 10).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].id.as_str(), sent[0].partition_key.as_str()),
        ("payments/batch/1", "payments")
    );
    let request: MergeRequest = json::from_slice(&sent[0].payload).unwrap();
    assert_eq!(request.queue_name, "payments");
    let steps: Vec<(&str, usize, Strategy)> = request
        .steps
        .iter()
        .map(|s| {
            (
                s.step_id.as_str(),
                s.change.as_ref().unwrap().uris.len(),
                s.strategy(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("payments/1", 2, Strategy::SquashRebase),
            ("payments/2", 1, Strategy::Default)
        ]
    );
    // No state change in this stage.
    assert_eq!(
        e.store
            .batch("payments/batch/1")
            .await
            .unwrap()
            .unwrap()
            .state(),
        BatchState::Merging
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_publish_means_runway_never_hears_of_the_batch() {
    let e = env_with(registry_without("log")).await;
    seed(&e.store, BatchState::Merging).await;
    assert!(merge(&e, batch_ref("payments/batch/1", "payments"))
        .await
        .is_err());
    assert!(ids(&e, "runway-merge").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_refuses_unknown_queues_missing_batches_and_mismatched_queues() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    e.store.add_queue("search").await.unwrap();
    for (payload, why) in [
        (batch_ref("payments/batch/1", "nowhere"), "unknown queue"),
        (batch_ref("payments/batch/9", "payments"), "does not exist"),
        (
            batch_ref("payments/batch/1", "search"),
            "belongs to queue \"payments\"",
        ),
    ] {
        let err = merge(&e, payload).await.unwrap_err();
        assert!(!err.is_retryable(), "{why}");
        assert!(
            err.failure().reason.contains(why),
            "{}",
            err.failure().reason
        );
    }
    assert!(ids(&e, "runway-merge").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_skips_halted_batches() {
    for state in [
        BatchState::Cancelling,
        BatchState::Succeeded,
        BatchState::Failed,
        BatchState::Cancelled,
    ] {
        let e = env().await;
        seed(&e.store, state).await;
        assert_eq!(
            merge(&e, batch_ref("payments/batch/1", "payments"))
                .await
                .unwrap(),
            Handled::Ack
        );
        assert!(ids(&e, "runway-merge").await.is_empty(), "{state:?}");
        assert!(ids(&e, "log").await.is_empty(), "{state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mergesignal_lands_the_batch_and_fans_out_conclude_then_speculate() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    signal(&e, result(MergeOutcome::Succeeded, ""))
        .await
        .unwrap();
    let batch = the_batch(&e).await;
    assert_eq!((batch.state(), batch.version), (BatchState::Succeeded, 2));
    assert_eq!(
        in_state(&e, BatchState::Succeeded).await,
        ["payments/batch/1"]
    );
    assert!(in_state(&e, BatchState::Merging).await.is_empty());
    let conclude = e.backend.peek("conclude", 10).await.unwrap();
    assert_eq!(conclude[0].id, "payments/batch/1/conclude/merged");
    assert!(!conclude[0].metadata.contains_key("failure_reason"));
    assert_eq!(ids(&e, "speculate").await, ["payments/batch/1/merged"]);
    assert_eq!(
        e.store.revisions("payments/1").await.unwrap(),
        ["ab".repeat(20)]
    );
}

async fn command(e: &Env, cmd: &'static str, args: &[&str]) -> Value {
    e.backend
        .client()
        .custom(
            CustomCommand::new_static(cmd, ClusterHash::Random, false),
            args.iter().map(|a| Value::from(*a)).collect(),
        )
        .await
        .unwrap_or_else(|err| panic!("{cmd} {args:?}: {err}"))
}

/// Make the server's slow log record every command from now on.
async fn record_commands(e: &Env) {
    command(e, "CONFIG", &["SET", "slowlog-log-slower-than", "0"]).await;
    command(e, "CONFIG", &["SET", "slowlog-max-len", "100000"]).await;
    command(e, "SLOWLOG", &["RESET"]).await;
}

/// The topics published to since [`record_commands`], in the order the server ran the
/// publishes (a publish is a script call whose first key is the topic's stream).
async fn published_topics(e: &Env) -> Vec<String> {
    let prefix = &e.backend.config().redis.key_prefix;
    let registry = app::registry();
    let streams: Vec<(String, &str)> = registry
        .iter()
        .map(|(topic, stream)| (format!("{prefix}:{{{stream}}}:s:{stream}"), topic))
        .collect();
    let mut entries: Vec<(i64, Vec<String>)> = command(e, "SLOWLOG", &["GET", "-1"])
        .await
        .into_array()
        .into_iter()
        .map(|entry| {
            let entry = entry.into_array();
            let args = entry[3].clone().into_array();
            (
                entry[0].as_i64().unwrap(),
                args.iter().filter_map(Value::as_string).collect(),
            )
        })
        .collect();
    entries.sort_by_key(|(id, _)| *id);
    let mut topics: Vec<String> = entries
        .into_iter()
        .filter(|(_, args)| {
            args.first()
                .is_some_and(|c| c.eq_ignore_ascii_case("evalsha"))
        })
        .filter_map(|(_, args)| {
            let key = args.get(3)?;
            streams
                .iter()
                .find(|(stream, _)| stream == key)
                .map(|(_, topic)| (*topic).to_owned())
        })
        .collect();
    // A script the server did not know yet is sent twice (refused, then loaded and run).
    topics.dedup();
    topics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclude_goes_out_before_speculate() {
    // The server runs conclude's publish before speculate's.
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    record_commands(&e).await;
    signal(&e, result(MergeOutcome::Succeeded, ""))
        .await
        .unwrap();
    assert_eq!(published_topics(&e).await, ["conclude", "speculate"]);
    // And when conclude cannot be published, speculate is not.
    let e = env_with(registry_without("conclude")).await;
    seed(&e.store, BatchState::Merging).await;
    assert!(signal(&e, result(MergeOutcome::Succeeded, ""))
        .await
        .is_err());
    assert!(ids(&e, "speculate").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_merge_carries_its_reason_to_conclude() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    signal(&e, result(MergeOutcome::Failed, "conflict in README.md"))
        .await
        .unwrap();
    let batch = the_batch(&e).await;
    assert_eq!(
        (batch.state(), batch.failure_reason.as_str()),
        (BatchState::Failed, "conflict in README.md")
    );
    let conclude = e.backend.peek("conclude", 10).await.unwrap();
    assert_eq!(
        conclude[0].metadata["failure_reason"],
        "conflict in README.md"
    );
    // Conclude turns it into the requests' error.
    let stage = ConcludeStage {
        store: e.store.clone(),
        outbox: e.outbox.clone(),
    };
    let d = delivery(
        "conclude",
        conclude[0].payload.clone(),
        conclude[0].metadata.clone(),
    );
    TopicHandler::<keyway::orchestrator::topics::Conclude>::handle(
        &stage,
        json::from_slice(&d.payload).unwrap(),
        &d,
    )
    .await
    .unwrap();
    let r = e.store.request("payments/2").await.unwrap().unwrap();
    assert_eq!(
        (r.state(), r.error.as_str()),
        (RequestState::Error, "conflict in README.md")
    );
    assert!(ids(&e, "log")
        .await
        .contains(&"payments/2/error".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_outcome_fails_the_batch() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    signal(&e, result(MergeOutcome::Unspecified, ""))
        .await
        .unwrap();
    let batch = the_batch(&e).await;
    assert_eq!(
        (batch.state(), batch.failure_reason.as_str()),
        (BatchState::Failed, "merge failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelling_batch_is_left_to_the_cancel_path() {
    let e = env().await;
    seed(&e.store, BatchState::Cancelling).await;
    assert_eq!(
        signal(&e, result(MergeOutcome::Succeeded, ""))
            .await
            .unwrap(),
        Handled::Ack
    );
    let batch = the_batch(&e).await;
    assert_eq!((batch.state(), batch.version), (BatchState::Cancelling, 1));
    assert!(ids(&e, "conclude").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_without_a_queue_or_a_batch_are_not_retried() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let mut r = result(MergeOutcome::Succeeded, "");
    r.queue_name.clear();
    assert!(!signal(&e, r).await.unwrap_err().is_retryable());
    let mut r = result(MergeOutcome::Succeeded, "");
    r.id = "payments/batch/404".into();
    assert!(!signal(&e, r).await.unwrap_err().is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_terminal_result_repairs_and_fans_out_with_the_same_ids() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    signal(&e, result(MergeOutcome::Succeeded, ""))
        .await
        .unwrap();
    // The membership record is damaged (it is written after the CAS, so it can be).
    e.store
        .repair_batch_membership(&Batch {
            id: "payments/batch/1".into(),
            queue: "payments".into(),
            state: BatchState::Merging as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    signal(&e, result(MergeOutcome::Succeeded, ""))
        .await
        .unwrap();
    assert_eq!(
        in_state(&e, BatchState::Succeeded).await,
        ["payments/batch/1"]
    );
    assert!(in_state(&e, BatchState::Merging).await.is_empty());
    assert_eq!(
        ids(&e, "conclude").await.len(),
        1,
        "the re-sent fan-out was deduplicated"
    );
    assert_eq!(ids(&e, "speculate").await.len(), 1);
    assert_eq!(
        e.store
            .batch("payments/batch/1")
            .await
            .unwrap()
            .unwrap()
            .version,
        2,
        "no second update"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_conflict_is_a_retryable_failure() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let mut stale = the_batch(&e).await;
    let mut fresh = stale.clone();
    fresh.set_state(BatchState::Failed);
    e.store.update_batch(&mut fresh).await.unwrap();
    stale.set_state(BatchState::Succeeded);
    let err = e.store.update_batch(&mut stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
    assert_eq!(
        stale.version, 1,
        "the caller's copy keeps the version it read"
    );
    assert!(HandlerError::from(err).is_retryable());
    // Re-reading and retrying succeeds.
    let mut reread = the_batch(&e).await;
    reread.set_state(BatchState::Succeeded);
    e.store.update_batch(&mut reread).await.unwrap();
    assert_eq!(
        e.store
            .batch("payments/batch/1")
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speculate_wake_up_is_not_swallowed_by_an_earlier_announcement() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    // The batch was announced to speculate when it was created, with its own id.
    Producer::<keyway::orchestrator::topics::Speculate, _>::new(e.backend.clone())
        .publish(
            &BatchRef {
                id: "payments/batch/1".into(),
                queue: "payments".into(),
            },
            MessageId::new("payments/batch/1").unwrap(),
            "payments",
            Metadata::new(),
        )
        .await
        .unwrap();
    signal(&e, result(MergeOutcome::Succeeded, ""))
        .await
        .unwrap();
    assert_eq!(
        ids(&e, "speculate").await,
        ["payments/batch/1", "payments/batch/1/merged"]
    );
}

fn dead_letter(topic: &str, payload: Vec<u8>) -> Delivery {
    delivery(
        topic,
        payload,
        Metadata::from([
            (
                "dlq.last_error".to_owned(),
                "merge result has no queue_name".to_owned(),
            ),
            ("dlq.failure_count".to_owned(), "1".to_owned()),
            ("dlq.original_topic".to_owned(), "merge-signal".to_owned()),
        ]),
    )
}

fn reconciler(e: &Env) -> BatchReconciler {
    BatchReconciler {
        store: e.store.clone(),
        outbox: e.outbox.clone(),
        parking: Parking::new(&e.backend),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_fails_a_dead_lettered_batch_and_its_members() {
    for state in [
        BatchState::Merging,
        BatchState::Cancelling,
        BatchState::Failed,
        BatchState::Succeeded,
        BatchState::Cancelled,
    ] {
        let e = env().await;
        seed(&e.store, state).await;
        let payload = json::to_vec(&result(MergeOutcome::Succeeded, "")).unwrap();
        let outcome = reconciler(&e)
            .handle(&dead_letter("merge-signal_dlq", payload))
            .await;
        assert_eq!(outcome, Outcome::Ack, "{state:?}");
        let batch = the_batch(&e).await;
        let r = e.store.request("payments/1").await.unwrap().unwrap();
        match state {
            BatchState::Succeeded | BatchState::Cancelled => {
                assert_eq!(batch.state(), state, "left alone");
                assert_eq!(r.state(), RequestState::Queued);
                assert!(ids(&e, "conclude").await.is_empty());
            }
            _ => {
                assert_eq!(batch.state(), BatchState::Failed, "{state:?}");
                assert_eq!(r.state(), RequestState::Error);
                assert!(
                    r.error.starts_with("merge result has no queue_name ("),
                    "{}",
                    r.error
                );
                assert!(r.error.contains("dlq.failure_count=1"), "{}", r.error);
                assert!(ids(&e, "log")
                    .await
                    .contains(&"payments/1/error".to_owned()));
                assert_eq!(
                    ids(&e, "conclude").await,
                    ["payments/batch/1/conclude/merged"]
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_acks_dead_letters_of_missing_batches_and_parks_the_impossible() {
    let e = env().await;
    let missing = json::to_vec(&result(MergeOutcome::Succeeded, "")).unwrap();
    assert_eq!(
        reconciler(&e)
            .handle(&dead_letter("merge-signal_dlq", missing))
            .await,
        Outcome::Ack
    );
    assert!(ids(&e, "parked").await.is_empty());
    // Does not decode, or names no batch: parked, not retried.
    for (topic, payload) in [
        ("merge-signal_dlq", b"{\"id\": 7}".to_vec()),
        ("submitqueue-merge_dlq", batch_ref("", "payments")),
    ] {
        assert_eq!(
            reconciler(&e).handle(&dead_letter(topic, payload)).await,
            Outcome::Ack
        );
    }
    let parked = e.backend.peek("parked", 10).await.unwrap();
    assert_eq!(parked.len(), 2);
    let first: keyway::orchestrator::Parked = json::from_slice(&parked[0].payload).unwrap();
    assert_eq!(first.topic, "merge-signal_dlq");
    assert!(
        first
            .reason
            .contains("id: expected a string, found a number"),
        "{}",
        first.reason
    );
    assert_eq!(first.payload, b"{\"id\": 7}");
    assert_eq!(
        first.metadata["dlq.last_error"],
        "merge result has no queue_name"
    );
    assert_eq!(
        e.backend
            .metrics()
            .counter("keyway_parked_total", &[("topic", "merge-signal_dlq")]),
        1
    );
}

/// Wait until every batch of `ids` is terminal and every member settled.
async fn settle(store: &Store, batches: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    'wait: loop {
        assert!(
            Instant::now() < deadline,
            "batches did not settle in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        for id in batches {
            let b = store.batch(id).await.unwrap().unwrap();
            if !matches!(
                b.state(),
                BatchState::Succeeded | BatchState::Failed | BatchState::Cancelled
            ) {
                continue 'wait;
            }
            for r in &b.contains {
                if store.request(r).await.unwrap().unwrap().state() == RequestState::Queued {
                    continue 'wait;
                }
            }
        }
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_through_the_backend() {
    let e = env().await;
    let batches = keyway::stages::fixture::seed(&e.store).await.unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(&e.backend, &Role::ALL, &FAKE, &shutdown);
    keyway::stages::fixture::submit(&e.backend, &batches)
        .await
        .unwrap();
    let ids: Vec<&str> = batches.iter().map(|b| b.id.as_str()).collect();
    settle(&e.store, &ids, Duration::from_secs(30)).await;
    trigger.trigger();
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let state = |id: &'static str| {
        let store = e.store.clone();
        async move { store.batch(id).await.unwrap().unwrap() }
    };
    // A poison result was never involved; merge-error went through Runway's dead letters.
    let search = state("search/batch/1").await;
    assert_eq!(search.state(), BatchState::Failed);
    assert!(
        search
            .failure_reason
            .starts_with("dead-lettered: merge backend unavailable"),
        "{}",
        search.failure_reason
    );
    assert_eq!(
        e.backend
            .peek("merge-signal", 100)
            .await
            .unwrap()
            .iter()
            .filter(|s| s.id == "search/batch/1/dlq")
            .count(),
        1,
        "the Runway reconciler answered with id <id>/dlq"
    );
    // Two batches of one queue, in order.
    assert_eq!(
        e.store.speculations("payments").await.unwrap(),
        ["payments/batch/1", "payments/batch/2", "payments/batch/3"]
    );
    let landed = e.store.request("payments/4").await.unwrap().unwrap();
    assert_eq!(landed.state(), RequestState::Landed);
    assert_eq!(landed.revisions.len(), 1);
    assert_eq!(TopicKey::ALL.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_result_is_dead_lettered_and_reconciled() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(
        &e.backend,
        &[Role::MergeSignal, Role::Reconcile, Role::Conclude],
        &FAKE,
        &shutdown,
    );
    let mut poison = result(MergeOutcome::Succeeded, "");
    poison.queue_name.clear();
    Producer::<keyway::topics::MergeSignal, _>::new(e.backend.clone())
        .publish(
            &poison,
            MessageId::new("payments/batch/1").unwrap(),
            "payments",
            Metadata::new(),
        )
        .await
        .unwrap();
    settle(&e.store, &["payments/batch/1"], Duration::from_secs(15)).await;
    trigger.trigger();
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let batch = the_batch(&e).await;
    assert_eq!(batch.state(), BatchState::Failed);
    assert_eq!(
        batch.failure_reason,
        "dead-lettered: merge result has no queue_name"
    );
    for r in ["payments/1", "payments/2"] {
        assert_eq!(
            e.store.request(r).await.unwrap().unwrap().state(),
            RequestState::Error
        );
    }
}
