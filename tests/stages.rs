//! Every branch of the merge and mergesignal stages, the reconcilers and the responder, on a
//! real `redis-server` of each test's own (and, as `stages_on_cluster.rs`, on a Redis Cluster:
//! there `crate::test_redis` is a shared cluster and `crate::ON_CLUSTER` is true).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway::base::mergestrategy::Strategy;
use keyway::merge_service::{AnyMerger, FakeMerger};
use keyway::orchestrator::{
    Batch, BatchRef, BatchState, LandStrategy, Parked, Request, RequestState,
};
use keyway::runway::messagequeue::{
    MergeRequest, MergeResult, Outcome as MergeOutcome, StepOutput, StepResult,
};
use keyway::stages::app::{self, Role};
use keyway::stages::orchestrator::{
    ConcludeStage, MergeSignalStage, MergeStage, Outbox, SpeculateStage,
};
use keyway::stages::reconcile::{BatchReconciler, FanOutReconciler, Parking, RunwayReconciler};
use keyway::stages::store::{cut, Store, StoreError, MAX_NAMED, MAX_REASON};
use keyway::topics::TopicKey;
use keyway_runtime::json;
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown,
};
use keyway_runtime::stub::{Consumer, Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{
    Backoff, BoxFuture, Delivery, Failure, Handler, Lease, MessageId, Metadata, Outcome,
    OutgoingMessage, Publisher, SubscriptionConfig, TransportError,
};

const FAKE: AnyMerger = AnyMerger::Fake(FakeMerger);

struct Env {
    backend: RedisBackend,
    store: Store,
    outbox: Outbox,
    _server: Box<dyn std::any::Any + Send + Sync>,
}

/// Where a test's Redis is: what keeps it running, its URL, and the key prefix to use on it.
pub(crate) struct TestRedis {
    pub(crate) keep: Box<dyn std::any::Any + Send + Sync>,
    pub(crate) url: String,
    pub(crate) key_prefix: Option<String>,
}

/// Whether the tests run on a Redis Cluster; a test that needs one server's view of every key
/// or command says it is skipped there.
pub(crate) const ON_CLUSTER: bool = false;

/// A `redis-server` of the test's own.
pub(crate) fn test_redis() -> TestRedis {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts");
    TestRedis {
        url: server.url(),
        keep: Box::new(server),
        key_prefix: None,
    }
}

async fn env_with(registry: Registry) -> Env {
    env_configured(|config| config.registry = registry).await
}

/// A server of its own, and the stages' configuration as `adjust` leaves it.
async fn env_configured(adjust: impl FnOnce(&mut Config)) -> Env {
    let server = crate::test_redis();
    let mut config = app::config(&server.url);
    if let Some(prefix) = server.key_prefix {
        config.redis.key_prefix = prefix;
    }
    config.redis.shutdown_deadline = Duration::from_secs(2);
    adjust(&mut config);
    let (backend, _) = RedisBackend::connect(config).await.unwrap();
    let store = Store::new(&backend);
    let outbox = Outbox::new(&backend);
    Env {
        backend,
        store,
        outbox,
        _server: server.keep,
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

/// The lease of a delivery handed straight to a handler: what the handler publishes with its
/// ack goes out at once (these tests call handlers, not a consume loop; publishing with the
/// ack itself is the backend suite's and `the_whole_loop_through_the_backend`'s).
struct AtOnce(RedisBackend);
impl Lease for AtOnce {
    fn extend(&self, _: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish_on_ack(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> BoxFuture<'_, Result<(), TransportError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.0.publish(&topic, message).await.map(drop) })
    }
}

fn delivery(e: &Env, topic: &str, payload: Vec<u8>, metadata: Metadata) -> Delivery {
    Delivery {
        topic: topic.into(),
        id: "test".into(),
        partition_key: "payments".into(),
        payload,
        metadata,
        published_at_ms: 0,
        attempt: 1,
        lease: Arc::new(AtOnce(e.backend.clone())),
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
        ..Default::default()
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
        &delivery(e, "submitqueue-merge", payload, Metadata::new()),
    )
    .await
}

async fn conclude_with(
    e: &Env,
    payload: Vec<u8>,
    metadata: Metadata,
) -> Result<Handled, HandlerError> {
    let stage = ConcludeStage {
        store: e.store.clone(),
        outbox: e.outbox.clone(),
    };
    let r: BatchRef = json::from_slice(&payload).unwrap();
    TopicHandler::<keyway::orchestrator::topics::Conclude>::handle(
        &stage,
        r,
        &delivery(e, "conclude", payload, metadata),
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
        &delivery(e, "merge-signal", payload, Metadata::new()),
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

/// What a `BatchRef` may name as the batch's requests: nothing (an older producer), the
/// record's requests, fewer, others, or more than a stage reads on a message's word. Only the
/// record counts.
fn named_variants() -> [Vec<String>; 5] {
    [
        vec![],
        vec!["payments/1".into(), "payments/2".into()],
        vec!["payments/2".into()],
        vec!["payments/1".into(), "payments/9".into()],
        (0..=MAX_NAMED).map(|n| format!("payments/{n}")).collect(),
    ]
}

/// `HGET`s the server has run, in scripts or not.
async fn hget_calls(e: &Env) -> usize {
    let info: String = e
        .backend
        .client()
        .custom(
            CustomCommand::new_static("INFO", ClusterHash::FirstKey, false),
            vec!["commandstats"],
        )
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_and_conclude_take_the_requests_the_record_lists_whatever_the_message_names() {
    for named in named_variants() {
        let e = env().await;
        seed(&e.store, BatchState::Merging).await;
        let payload = json::to_vec(&BatchRef {
            id: "payments/batch/1".into(),
            queue: "payments".into(),
            contains: named.clone(),
        })
        .unwrap();
        let before = hget_calls(&e).await;
        merge(&e, payload.clone()).await.unwrap();
        // The batch, the names it took on the message's word, and the record's two requests.
        let on_its_word = if named.len() <= MAX_NAMED {
            named.len()
        } else {
            0
        };
        let read = hget_calls(&e).await - before;
        if crate::ON_CLUSTER {
            eprintln!("reads not counted on the cluster: its commandstats hold other tests' too");
        } else {
            assert!(
                read <= 1 + on_its_word + 2,
                "{read} reads for {} names",
                named.len()
            );
        }
        let sent = e.backend.peek("runway-merge", 10).await.unwrap();
        let request: MergeRequest = json::from_slice(&sent[0].payload).unwrap();
        let steps: Vec<&str> = request.steps.iter().map(|s| s.step_id.as_str()).collect();
        assert_eq!(steps, ["payments/1", "payments/2"], "named {named:?}");

        let mut batch = the_batch(&e).await;
        batch.set_state(BatchState::Succeeded);
        let revisions = [("payments/1", vec!["r1".to_owned()])];
        e.store
            .update_batch_with_revisions(&mut batch, &revisions)
            .await
            .unwrap();
        conclude_with(&e, payload, Metadata::new()).await.unwrap();
        for (id, landed_as) in [("payments/1", &["r1"][..]), ("payments/2", &[])] {
            let r = e.store.request(id).await.unwrap().unwrap();
            assert_eq!(r.state(), RequestState::Landed, "{id}, named {named:?}");
            assert_eq!(r.revisions, landed_as, "{id}, named {named:?}");
        }
        assert!(e.store.request("payments/9").await.unwrap().is_none());
    }
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

#[tokio::test]
async fn a_write_sent_twice_is_one_write_not_a_conflict() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let read = e.store.request("payments/1").await.unwrap().unwrap();
    let mut first = read.clone();
    first.set_state(RequestState::Landed);
    let mut again = first.clone();
    e.store.update_request(&mut first).await.unwrap();
    // The same write once more, as a client re-sends it after a lost reply.
    e.store.update_request(&mut again).await.unwrap();
    assert_eq!(again.version, first.version);
    let stored = e.store.request("payments/1").await.unwrap().unwrap();
    assert_eq!(stored, first);
    // A different write from the same stale read still conflicts.
    let mut other = read.clone();
    other.set_state(RequestState::Error);
    assert!(matches!(
        e.store.update_request(&mut other).await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn a_result_cannot_write_revisions_onto_requests_outside_its_batch() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let mut r = result(MergeOutcome::Succeeded, "");
    r.steps.push(StepResult {
        step_id: "payments/99".into(),
        outputs: vec![StepOutput {
            id: "cd".repeat(20),
        }],
        reason: String::new(),
    });
    signal(&e, r).await.unwrap();
    assert_eq!(
        e.store.revisions("payments/1").await.unwrap(),
        ["ab".repeat(20)]
    );
    assert!(e.store.revisions("payments/99").await.unwrap().is_empty());
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
    if crate::ON_CLUSTER {
        eprintln!("skipped on the cluster: reads the order of commands from one server's slow log");
        return;
    }
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
    conclude_with(
        &e,
        conclude[0].payload.clone(),
        conclude[0].metadata.clone(),
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
    // The membership record is damaged (a client that writes the sets after the record, as
    // the Python one does, can leave it so).
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

/// `SADD` (`add`) or `SREM` the batch from the set of `state`, behind the store's back.
async fn tamper(e: &Env, state: BatchState, add: bool) {
    let key = format!(
        "{}:st:{{payments}}:batchs:{}",
        e.backend.config().redis.key_prefix,
        state.as_str_name()
    );
    let name = if add { "SADD" } else { "SREM" };
    e.backend
        .client()
        .custom::<Value, Value>(
            CustomCommand::new_static(name, ClusterHash::FirstKey, false),
            vec![key.into(), "payments/batch/1".into()],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_moves_the_membership_with_the_record_and_mends_a_set_that_lost_it() {
    let e = env().await;
    let mut batch = seed(&e.store, BatchState::Merging).await;
    assert_eq!(
        in_state(&e, BatchState::Merging).await,
        ["payments/batch/1"]
    );
    // Moved from the state it had.
    batch.set_state(BatchState::Speculating);
    e.store.update_batch(&mut batch).await.unwrap();
    assert!(in_state(&e, BatchState::Merging).await.is_empty());
    assert_eq!(
        in_state(&e, BatchState::Speculating).await,
        ["payments/batch/1"]
    );
    // The set of the state it had lost it: the write still lands it in the new state's set.
    tamper(&e, BatchState::Speculating, false).await;
    tamper(&e, BatchState::Failed, true).await;
    batch.set_state(BatchState::Succeeded);
    let resent = batch.clone();
    e.store.update_batch(&mut batch).await.unwrap();
    assert_eq!(
        in_state(&e, BatchState::Succeeded).await,
        ["payments/batch/1"]
    );
    assert!(in_state(&e, BatchState::Failed).await.is_empty());
    // The same write again (its reply lost): a success that mends every set.
    tamper(&e, BatchState::Cancelled, true).await;
    let mut again = resent;
    e.store.update_batch(&mut again).await.unwrap();
    assert_eq!(again.version, batch.version);
    assert!(in_state(&e, BatchState::Cancelled).await.is_empty());
    assert_eq!(
        in_state(&e, BatchState::Succeeded).await,
        ["payments/batch/1"]
    );
    // A stale write is a conflict and moves nothing.
    let mut stale = again.clone();
    stale.version -= 1;
    stale.set_state(BatchState::Failed);
    assert!(matches!(
        e.store.update_batch(&mut stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(in_state(&e, BatchState::Failed).await.is_empty());
}

#[tokio::test]
async fn a_batchs_requests_are_read_and_written_in_one_script_all_or_none() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let ids: Vec<String> = ["payments/1", "payments/2", "payments/9"]
        .map(String::from)
        .into();
    let read = e.store.requests(&ids).await.unwrap();
    assert_eq!(
        read.iter()
            .map(|r| r.as_ref().map(|r| r.id.as_str()))
            .collect::<Vec<_>>(),
        [Some("payments/1"), Some("payments/2"), None]
    );
    let mut requests: Vec<Request> = read.into_iter().flatten().collect();
    // Another writer moves the second request on: writing both from the old read is a conflict
    // on it, and the first is not written either.
    let mut other = requests[1].clone();
    other.set_state(RequestState::Cancelled);
    e.store.update_request(&mut other).await.unwrap();
    for r in &mut requests {
        r.set_state(RequestState::Landed);
    }
    let err = e.store.update_requests(&mut requests).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(what) if what == "request payments/2"),
        "{err}"
    );
    assert_eq!(
        requests.iter().map(|r| r.version).collect::<Vec<_>>(),
        [1, 1]
    );
    let stored = e.store.request("payments/1").await.unwrap().unwrap();
    assert_eq!((stored.state(), stored.version), (RequestState::Queued, 1));
    // From a fresh read both are written, and each moves to its new state's set.
    e.store
        .set_revisions(&[("payments/1", vec!["r1".into(), "r2".into()])])
        .await
        .unwrap();
    let fresh = e.store.members(&ids[..2], true).await.unwrap();
    assert_eq!(fresh[0].1, ["r1", "r2"]);
    assert!(fresh[1].1.is_empty());
    let mut requests: Vec<Request> = fresh.into_iter().filter_map(|(r, _)| r).collect();
    for r in &mut requests {
        r.set_state(RequestState::Error);
    }
    e.store.update_requests(&mut requests).await.unwrap();
    assert_eq!(
        requests.iter().map(|r| r.version).collect::<Vec<_>>(),
        [2, 3]
    );
    for id in &ids[..2] {
        let stored = e.store.request(id).await.unwrap().unwrap();
        assert_eq!(stored.state(), RequestState::Error);
    }
}

#[tokio::test]
async fn submitting_numbers_requests_and_batches_without_reuse() {
    use keyway::stages::submit::{submit, NewRequest};
    let e = env().await;
    let request = |sha: char| NewRequest {
        uris: vec![format!(
            "file:///srv/pay.git/refs%2Fheads%2Fmain/{}",
            sha.to_string().repeat(40)
        )],
        strategy: LandStrategy::Rebase,
    };
    let first = submit(&e.backend, &e.store, "pay", &[request('a'), request('b')])
        .await
        .unwrap();
    let second = submit(&e.backend, &e.store, "pay", &[request('c')])
        .await
        .unwrap();
    let third = submit(&e.backend, &e.store, "pay", &[request('d'), request('e')])
        .await
        .unwrap();
    for (batch, id, contains, shas) in [
        (&first, "pay/batch/1", &["pay/1", "pay/2"][..], "ab"),
        (&second, "pay/batch/2", &["pay/3"], "c"),
        (&third, "pay/batch/3", &["pay/4", "pay/5"], "de"),
    ] {
        assert_eq!(batch.id, id);
        assert_eq!(batch.contains, contains);
        let stored = e.store.batch(id).await.unwrap().unwrap();
        assert_eq!((&stored, stored.version), (batch, 1));
        let requests = e.store.requests(&batch.contains).await.unwrap();
        for (r, sha) in requests.iter().zip(shas.chars()) {
            let r = r.as_ref().unwrap();
            assert_eq!((r.state(), r.version), (RequestState::Queued, 1));
            assert!(r.uris[0].ends_with(&sha.to_string().repeat(40)), "{r:?}");
        }
    }
}

#[tokio::test]
async fn a_batch_and_its_revisions_are_written_together_or_not_at_all() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let mut stale = the_batch(&e).await;
    let mut fresh = stale.clone();
    fresh.set_state(BatchState::Cancelling);
    e.store.update_batch(&mut fresh).await.unwrap();
    let revisions = [("payments/1", vec!["r1".to_owned()])];
    stale.set_state(BatchState::Succeeded);
    assert!(matches!(
        e.store
            .update_batch_with_revisions(&mut stale, &revisions)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(e.store.revisions("payments/1").await.unwrap().is_empty());
    let mut reread = the_batch(&e).await;
    reread.set_state(BatchState::Succeeded);
    e.store
        .update_batch_with_revisions(&mut reread, &revisions)
        .await
        .unwrap();
    assert_eq!(reread.version, 3);
    assert_eq!(e.store.revisions("payments/1").await.unwrap(), ["r1"]);
    assert_eq!(
        in_state(&e, BatchState::Succeeded).await,
        ["payments/batch/1"]
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
                ..Default::default()
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

fn dead_letter(e: &Env, topic: &str, payload: Vec<u8>) -> Delivery {
    delivery(
        e,
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
        let payload = json::to_vec(&result(MergeOutcome::Failed, "merge conflict")).unwrap();
        let outcome = reconciler(&e)
            .handle(&dead_letter(&e, "merge-signal_dlq", payload))
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
async fn a_dead_lettered_success_is_applied_not_failed() {
    // The changes landed; only applying the answer failed for too long.
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let payload = json::to_vec(&result(MergeOutcome::Succeeded, "")).unwrap();
    let outcome = reconciler(&e)
        .handle(&dead_letter(&e, "merge-signal_dlq", payload))
        .await;
    assert_eq!(outcome, Outcome::Ack);
    assert_eq!(the_batch(&e).await.state(), BatchState::Succeeded);
    assert_eq!(
        e.store.revisions("payments/1").await.unwrap(),
        ["ab".repeat(20)]
    );
    assert_eq!(
        ids(&e, "conclude").await,
        ["payments/batch/1/conclude/merged"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_acks_dead_letters_of_missing_batches_and_parks_the_impossible() {
    let e = env().await;
    let missing = json::to_vec(&result(MergeOutcome::Succeeded, "")).unwrap();
    assert_eq!(
        reconciler(&e)
            .handle(&dead_letter(&e, "merge-signal_dlq", missing))
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
            reconciler(&e)
                .handle(&dead_letter(&e, topic, payload))
                .await,
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

// Production hardening: the key prefix, bounded reasons, parking, the fan-out dead letters and
// once-per-message speculation.

/// Run `cmd` on `backend`'s connection, as it is allowed to.
async fn try_command(
    backend: &RedisBackend,
    cmd: &'static str,
    args: Vec<Value>,
) -> Result<Value, fred::error::Error> {
    backend
        .client()
        .custom(
            CustomCommand::new_static(cmd, ClusterHash::FirstKey, false),
            args,
        )
        .await
}

/// Every key on the server.
async fn all_keys(e: &Env) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = command(e, "SCAN", &[&cursor, "COUNT", "1000"])
            .await
            .into_array();
        cursor = reply[0].as_string().unwrap();
        keys.extend(
            reply[1]
                .clone()
                .into_array()
                .iter()
                .filter_map(Value::as_string),
        );
        if cursor == "0" {
            keys.sort();
            return keys;
        }
    }
}

/// Stop the subscriptions and check that each ended cleanly.
async fn stop(
    trigger: keyway_runtime::redis::ShutdownTrigger,
    mut tasks: tokio::task::JoinSet<Result<(), TransportError>>,
) {
    trigger.trigger();
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
}

/// Wait until `topic` holds `n` messages (at most `n`: more fails).
async fn wait_for(e: &Env, topic: &str, n: usize) -> Vec<keyway_runtime::redis::Stored> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = e.backend.peek(topic, 1000).await.unwrap();
        assert!(
            found.len() <= n,
            "{topic}: {} messages, expected {n}",
            found.len()
        );
        if found.len() == n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {} messages, expected {n}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parked_records(stored: &[keyway_runtime::redis::Stored]) -> Vec<Parked> {
    stored
        .iter()
        .map(|s| json::from_slice(&s.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_runs_as_an_acl_user_limited_to_its_key_prefix() {
    if crate::ON_CLUSTER {
        eprintln!("skipped on the cluster: sets an ACL user and scans the keys of one server");
        return;
    }
    let admin = env().await;
    command(
        &admin,
        "ACL",
        &[
            "SETUSER",
            "tenant",
            "reset",
            "on",
            ">s3cret",
            "~acme:*",
            "resetchannels",
            "+@all",
            "-@dangerous",
        ],
    )
    .await;
    let url = admin
        .backend
        .config()
        .redis
        .url
        .replace("redis://", "redis://tenant:s3cret@");
    let mut config = app::config(&url);
    config.redis.key_prefix = "acme".into();
    config.redis.shutdown_deadline = Duration::from_secs(2);
    let (backend, _) = RedisBackend::connect(config).await.unwrap();
    // The user can touch nothing outside `acme:` (the old store wrote `kw:st:...`).
    let refused = try_command(&backend, "SADD", vec!["kw:st:queues".into(), "x".into()])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("NOPERM"), "{refused}");

    let store = Store::new(&backend);
    let batches = keyway::stages::fixture::seed(&store).await.unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let tasks = app::start(&backend, &Role::ALL, &FAKE, &shutdown);
    keyway::stages::fixture::submit(&backend, &batches)
        .await
        .unwrap();
    let ids: Vec<&str> = batches.iter().map(|b| b.id.as_str()).collect();
    settle(&store, &ids, Duration::from_secs(30)).await;
    stop(trigger, tasks).await;

    let failed: Vec<&str> = {
        let mut out = Vec::new();
        for b in &batches {
            if store.batch(&b.id).await.unwrap().unwrap().state() == BatchState::Failed {
                out.push(b.id.as_str());
            }
        }
        out
    };
    assert_eq!(failed, ["payments/batch/2", "search/batch/1"]);
    assert_eq!(
        store.speculations("payments").await.unwrap(),
        ["payments/batch/1", "payments/batch/2", "payments/batch/3"]
    );
    let keys = all_keys(&admin).await;
    let outside: Vec<&String> = keys.iter().filter(|k| !k.starts_with("acme:")).collect();
    assert!(outside.is_empty(), "keys outside the prefix: {outside:?}");
    // The records and the queues are both there, with the queue as hash tag.
    for key in [
        "acme:st:queues",
        "acme:st:{payments}:batch:payments/batch/1",
        "acme:{merge-signal}:s:merge-signal",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
}

/// `n` bytes of text whose characters are two bytes wide, so a cut can fall inside one.
fn wide(n: usize) -> String {
    "é".repeat(n / 2)
}

fn is_bounded(text: &str) -> bool {
    text.len() <= MAX_REASON && text.contains(" [cut from ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_batch_id_or_queue_makes_no_huge_dead_letter() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let huge_id = format!("payments/{}", wide(1 << 20));
    let huge_queue = wide(1 << 20);
    let producer =
        Producer::<keyway::orchestrator::topics::SubmitqueueMerge, _>::new(e.backend.clone());
    for (n, (id, queue)) in [
        (huge_id.as_str(), "payments"),
        ("payments/batch/1", huge_queue.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        producer
            .publish(
                &BatchRef {
                    id: id.into(),
                    queue: queue.into(),
                    ..Default::default()
                },
                MessageId::new(format!("huge-{n}")).unwrap(),
                "payments",
                Metadata::new(),
            )
            .await
            .unwrap();
    }
    let (trigger, shutdown) = Shutdown::new();
    let tasks = app::start(&e.backend, &[Role::Merge], &FAKE, &shutdown);
    let dead = wait_for(&e, "submitqueue-merge_dlq", 2).await;
    stop(trigger, tasks).await;
    for (letter, says) in dead.iter().zip(["does not exist", "unknown queue"]) {
        let last_error = &letter.metadata["dlq.last_error"];
        assert!(is_bounded(last_error), "{} bytes", last_error.len());
        assert!(last_error.contains(says), "{last_error}");
        for (k, v) in &letter.metadata {
            assert!(v.len() <= MAX_REASON, "{k}: {} bytes", v.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_the_stages_write_are_bounded() {
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    // A failure reason from Runway: the batch, the conclude fan-out, the requests, the log.
    let huge = wide(1 << 20);
    signal(&e, result(MergeOutcome::Failed, &huge))
        .await
        .unwrap();
    let batch = the_batch(&e).await;
    assert!(is_bounded(&batch.failure_reason));
    assert!(batch.failure_reason.starts_with("éé"));
    let conclude = e.backend.peek("conclude", 10).await.unwrap();
    assert!(is_bounded(&conclude[0].metadata["failure_reason"]));
    conclude_with(
        &e,
        conclude[0].payload.clone(),
        conclude[0].metadata.clone(),
    )
    .await
    .unwrap();
    let r = e.store.request("payments/1").await.unwrap().unwrap();
    assert_eq!(r.state(), RequestState::Error);
    assert!(is_bounded(&r.error));
    for event in e.backend.peek("log", 100).await.unwrap() {
        let event: keyway::orchestrator::LogEvent = json::from_slice(&event.payload).unwrap();
        assert!(event.detail.len() <= MAX_REASON, "{}", event.detail.len());
    }

    // A dead letter with a huge last error: the batch reconciler's records.
    let e = env().await;
    seed(&e.store, BatchState::Merging).await;
    let mut letter = dead_letter(
        &e,
        "merge-signal_dlq",
        json::to_vec(&result(MergeOutcome::Failed, "merge conflict")).unwrap(),
    );
    letter
        .metadata
        .insert("dlq.last_error".into(), huge.clone());
    assert_eq!(reconciler(&e).handle(&letter).await, Outcome::Ack);
    let batch = the_batch(&e).await;
    assert!(batch.failure_reason.starts_with("dead-lettered: éé"));
    assert!(is_bounded(&batch.failure_reason));
    let r = e.store.request("payments/2").await.unwrap().unwrap();
    assert!(is_bounded(&r.error), "{}", r.error.len());

    // Runway's reconciler answers with a bounded reason.
    let request = MergeRequest {
        id: "payments/batch/1".into(),
        queue_name: "payments".into(),
        steps: Vec::new(),
    };
    let mut letter = dead_letter(&e, "runway-merge_dlq", json::to_vec(&request).unwrap());
    letter
        .metadata
        .insert("dlq.last_error".into(), huge.clone());
    assert_eq!(
        RunwayReconciler::new(&e.backend).handle(&letter).await,
        Outcome::Ack
    );
    let answers = e.backend.peek("merge-signal", 10).await.unwrap();
    let answer: MergeResult = json::from_slice(&answers[0].payload).unwrap();
    assert!(answer.reason.starts_with("dead-lettered: éé"));
    assert!(is_bounded(&answer.reason));

    // A parked reason.
    let mut letter = dead_letter(
        &e,
        "conclude_dlq",
        batch_ref("payments/batch/1", "payments"),
    );
    letter.metadata.insert("dlq.last_error".into(), huge);
    assert_eq!(
        FanOutReconciler::new(&e.backend).handle(&letter).await,
        Outcome::Ack
    );
    let parked = parked_records(&e.backend.peek("parked", 10).await.unwrap());
    assert!(parked[0].reason.starts_with("dead-lettered: éé"));
    assert!(is_bounded(&parked[0].reason));
}

/// Rejects every delivery with a reason and a detail of `n` bytes.
struct Verbose(usize);

impl Handler for Verbose {
    async fn handle(&self, _: &Delivery) -> Outcome {
        Outcome::Reject(
            Failure::new(format!("x{}", "€".repeat(self.0 / 3)))
                .with_detail("echo", "€".repeat(self.0 / 3)),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_cuts_a_huge_reason_on_a_char_boundary_as_the_stages_do() {
    let e = env().await;
    Producer::<keyway::orchestrator::topics::Conclude, _>::new(e.backend.clone())
        .publish(
            &BatchRef {
                id: "payments/batch/1".into(),
                queue: "payments".into(),
                ..Default::default()
            },
            MessageId::new("loud").unwrap(),
            "payments",
            Metadata::new(),
        )
        .await
        .unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let backend = e.backend.clone();
    let run = tokio::spawn(async move {
        backend
            .run(
                SubscriptionConfig::new("conclude", "loud"),
                Arc::new(Verbose(1_200_000)),
                shutdown,
            )
            .await
    });
    let dead = wait_for(&e, "conclude_dlq", 1).await;
    trigger.trigger();
    run.await.unwrap().unwrap();
    let reason = format!("x{}", "€".repeat(400_000));
    let last_error = &dead[0].metadata["dlq.last_error"];
    assert!(last_error.len() <= MAX_REASON, "{} bytes", last_error.len());
    assert!(!last_error.contains('\u{fffd}'), "cut inside a character");
    assert_eq!(*last_error, cut(&reason, MAX_REASON));
    assert!(
        last_error.ends_with("€… [cut from 1200001 bytes]"),
        "{last_error}"
    );
    let detail = &dead[0].metadata["dlq.detail.echo"];
    assert!(detail.len() <= MAX_REASON, "{} bytes", detail.len());
    assert_eq!(*detail, cut(&"€".repeat(400_000), MAX_REASON));
}

/// Add an entry to `topic`'s stream as it is, without the publish script.
async fn xadd(e: &Env, topic: &str, fields: &[(&str, &str)]) {
    let prefix = &e.backend.config().redis.key_prefix;
    let base = topic.strip_suffix("_dlq").unwrap_or(topic);
    let mut args: Vec<Value> = vec![format!("{prefix}:{{{base}}}:s:{topic}").into(), "*".into()];
    for (name, value) in fields {
        args.push((*name).into());
        args.push((*value).into());
    }
    try_command(&e.backend, "XADD", args).await.unwrap();
}

/// Pending and not yet read entries of `group` on `topic`'s stream.
async fn unsettled(e: &Env, topic: &str, group: &str) -> i64 {
    let prefix = &e.backend.config().redis.key_prefix;
    let base = topic.strip_suffix("_dlq").unwrap_or(topic);
    let key = format!("{prefix}:{{{base}}}:s:{topic}");
    let groups = command(e, "XINFO", &["GROUPS", &key]).await.into_array();
    for g in groups {
        let fields = g.into_array();
        let get = |name: &str| {
            fields
                .chunks(2)
                .find(|kv| kv[0].as_string().as_deref() == Some(name))
                .map(|kv| kv[1].clone())
        };
        if get("name").and_then(|v| v.as_string()).as_deref() == Some(group) {
            let pending = get("pending").and_then(|v| v.as_i64()).unwrap_or(0);
            let lag = get("lag").and_then(|v| v.as_i64()).unwrap_or(1);
            return pending + lag;
        }
    }
    i64::MAX
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_hostile_dead_letters_are_parked_once_each() {
    let e = env().await;
    // Written straight into the dead letters: one message id for all, no stream entry or one
    // forged entry for all, each with a payload of its own that is no MergeResult.
    for i in 0..6 {
        let payload = format!("garbage {i}");
        let mut fields = vec![
            ("id", "x"),
            ("pk", ""),
            ("at", "0"),
            ("payload", payload.as_str()),
        ];
        if i >= 3 {
            fields.push(("m:dlq.stream_entry", "1-0"));
        }
        xadd(&e, "merge-signal_dlq", &fields).await;
    }
    // And unreadable entries of the stage's own topic (no `id`): dead-lettered as malformed.
    for i in 0..2 {
        let payload = format!("no id {i}");
        xadd(
            &e,
            "merge-signal",
            &[
                ("pk", "payments"),
                ("at", "0"),
                ("payload", payload.as_str()),
            ],
        )
        .await;
    }
    let (trigger, shutdown) = Shutdown::new();
    let tasks = app::start(
        &e.backend,
        &[Role::MergeSignal, Role::Reconcile],
        &FAKE,
        &shutdown,
    );
    wait_for(&e, "parked", 8).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while unsettled(&e, "merge-signal_dlq", "orchestrator-reconcile").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the dead letters were not all settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(trigger, tasks).await;
    let parked = parked_records(&wait_for(&e, "parked", 8).await);
    let mut payloads: Vec<String> = parked
        .iter()
        .map(|p| {
            if p.metadata.contains_key("dlq.malformed") {
                p.message_id.clone()
            } else {
                String::from_utf8(p.payload.clone()).unwrap()
            }
        })
        .collect();
    payloads.sort();
    assert_eq!(
        &payloads[..6],
        (0..6).map(|i| format!("garbage {i}")).collect::<Vec<_>>()
    );
    assert!(payloads[6].starts_with("malformed:") && payloads[7].starts_with("malformed:"));
    assert!(parked.iter().all(|p| p.topic == "merge-signal_dlq"));
    assert_eq!(
        e.backend
            .metrics()
            .counter("keyway_parked_total", &[("topic", "merge-signal_dlq")]),
        8
    );

    // A redelivery of one of them is not parked again.
    let again = delivery(
        &e,
        "merge-signal_dlq",
        b"garbage 0".to_vec(),
        Metadata::new(),
    );
    let again = Delivery {
        id: "x".into(),
        partition_key: String::new(),
        attempt: 2,
        ..again
    };
    assert_eq!(reconciler(&e).handle(&again).await, Outcome::Ack);
    assert_eq!(e.backend.peek("parked", 100).await.unwrap().len(), 8);
    assert_eq!(
        e.backend
            .metrics()
            .counter("keyway_parked_total", &[("topic", "merge-signal_dlq")]),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_still_failing_on_its_last_attempt_is_parked_not_dropped() {
    let e = env().await;
    let parking = Parking::new(&e.backend).last_attempt(3);
    let payload = json::to_vec(&result(MergeOutcome::Succeeded, "")).unwrap();
    let mut letter = dead_letter(&e, "merge-signal_dlq", payload);
    // Every failure is retried before the last attempt, permanent or not.
    for (attempt, error) in [
        (1, HandlerError::permanent("stored record is corrupt")),
        (2, HandlerError::retryable("redis is down")),
    ] {
        letter.attempt = attempt;
        assert!(matches!(
            parking.settle(&letter, Err(error)).await,
            Outcome::Nack(_)
        ));
    }
    assert!(ids(&e, "parked").await.is_empty());
    // The last attempt: parked, not failed (the preset has no dead letters of its own, so
    // failing would drop it).
    letter.attempt = 3;
    let down = Err(HandlerError::retryable("redis is down"));
    assert_eq!(parking.settle(&letter, down).await, Outcome::Ack);
    let parked = parked_records(&e.backend.peek("parked", 10).await.unwrap());
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].reason,
        "still failing on attempt 3, the last: redis is down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_conclude_and_speculate_are_parked_and_trimmed() {
    let e = env_configured(|c| c.redis.trim_interval = Duration::from_millis(50)).await;
    let (trigger, shutdown) = Shutdown::new();
    let tasks = app::start(
        &e.backend,
        &[Role::Conclude, Role::Speculate, Role::Reconcile],
        &FAKE,
        &shutdown,
    );
    // Conclude of a batch that does not exist; speculate of a payload that does not decode.
    let conclude = Producer::<keyway::orchestrator::topics::Conclude, _>::new(e.backend.clone());
    conclude
        .publish(
            &BatchRef {
                id: "payments/batch/404".into(),
                queue: "payments".into(),
                ..Default::default()
            },
            MessageId::new("payments/batch/404/conclude/merged").unwrap(),
            "payments",
            Metadata::new(),
        )
        .await
        .unwrap();
    e.backend
        .publish(
            "speculate",
            OutgoingMessage {
                id: MessageId::new("payments/batch/405/merged").unwrap(),
                partition_key: "payments".into(),
                payload: b"not json".to_vec(),
                metadata: Metadata::new(),
            },
        )
        .await
        .unwrap();
    let mut parked = parked_records(&wait_for(&e, "parked", 2).await);
    parked.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(parked[0].topic, "conclude_dlq");
    assert_eq!(
        parked[0].reason,
        "dead-lettered: batch \"payments/batch/404\" does not exist"
    );
    assert_eq!(parked[1].topic, "speculate_dlq");
    assert!(
        parked[1].reason.starts_with(
            "dead-lettered: payload does not decode as keyway.orchestrator.v1.BatchRef"
        ),
        "{}",
        parked[1].reason
    );
    // A second one: once both are reconciled, the first is trimmed from the dead letters.
    conclude
        .publish(
            &BatchRef {
                id: "payments/batch/406".into(),
                queue: "payments".into(),
                ..Default::default()
            },
            MessageId::new("payments/batch/406/conclude/merged").unwrap(),
            "payments",
            Metadata::new(),
        )
        .await
        .unwrap();
    wait_for(&e, "parked", 3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while e.backend.peek("conclude_dlq", 10).await.unwrap().len() > 1 {
        assert!(Instant::now() < deadline, "conclude_dlq was not trimmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(trigger, tasks).await;
}

/// The speculate stage, with the first delivery's acknowledgement lost (it fails after the
/// stage ran).
struct LoseFirstAck {
    stage: Consumer<keyway::orchestrator::topics::Speculate, SpeculateStage>,
    calls: AtomicU32,
}

impl Handler for LoseFirstAck {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let outcome = self.stage.handle(d).await;
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Outcome::Nack(Failure::new("the acknowledgement was lost"));
        }
        outcome
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_speculate_message_is_one_wake_up() {
    let e = env().await;
    let producer = Producer::<keyway::orchestrator::topics::Speculate, _>::new(e.backend.clone());
    for (batch, id) in [
        ("payments/batch/1", "payments/batch/1/merged"),
        ("payments/batch/2", "payments/batch/2/merged"),
    ] {
        producer
            .publish(
                &BatchRef {
                    id: batch.into(),
                    queue: "payments".into(),
                    ..Default::default()
                },
                MessageId::new(id).unwrap(),
                "payments",
                Metadata::new(),
            )
            .await
            .unwrap();
    }
    let handler = Arc::new(LoseFirstAck {
        stage: Consumer::new(SpeculateStage {
            store: e.store.clone(),
        }),
        calls: AtomicU32::new(0),
    });
    let sub = SubscriptionConfig {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            multiplier: 1.0,
            max: Duration::from_millis(20),
        },
        ..SubscriptionConfig::new("speculate", "orchestrator-speculate")
    };
    let (trigger, shutdown) = Shutdown::new();
    let backend = e.backend.clone();
    let run = {
        let handler = handler.clone();
        tokio::spawn(async move { backend.run(sub, handler, shutdown).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while unsettled(&e, "speculate", "orchestrator-speculate").await != 0
        || handler.calls.load(Ordering::SeqCst) < 3
    {
        assert!(Instant::now() < deadline, "the deliveries did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.trigger();
    run.await.unwrap().unwrap();
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3, "one redelivery");
    assert_eq!(
        e.store.speculations("payments").await.unwrap(),
        ["payments/batch/1", "payments/batch/2"]
    );
    // Another message about the same batch is another wake-up.
    assert!(e
        .store
        .note_speculation("payments", "payments/batch/1", "payments/batch/1")
        .await
        .unwrap());
    assert!(!e
        .store
        .note_speculation("payments", "payments/batch/1", "payments/batch/1")
        .await
        .unwrap());
    assert_eq!(
        e.store.speculations("payments").await.unwrap(),
        ["payments/batch/1", "payments/batch/2", "payments/batch/1"]
    );
}
