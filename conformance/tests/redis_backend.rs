//! What only a real Redis can show: crashes and restarts of the server, connections killed
//! under the consumer, entries deleted underneath or written by hand, trimming, preflight and
//! metrics.
//!
//! As in the backend suite, checks wait for events (a delivery, the group owing nothing) and
//! assert counts; time appears only as a hang guard, or as a visibility timeout of an hour so
//! that anything that happens at all cannot have waited for one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway_conformance::backend_suite::{
    log, of, patient, poll, quick, send, wait_for, wait_until, Recorder, Seen, HANG_GUARD,
};
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, EvictionCheck, RedisBackend, Registry, Shutdown,
    ShutdownTrigger,
};
use keyway_runtime::transport::{
    Delivery, Handler, MessageId, Outcome, OutgoingMessage, PublishReceipt, Publisher,
    SubscriptionConfig, TransportError, TransportErrorKind,
};

fn config(server: &EmbeddedRedis) -> Config {
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = server.url();
    // Stopping waits for what is in flight to finish: an event, not a time.
    config.redis.shutdown_deadline = HANG_GUARD;
    config
}

fn start(append_only: bool) -> EmbeddedRedis {
    EmbeddedRedis::start(EmbeddedOptions {
        append_only,
        ..Default::default()
    })
    .expect("redis-server starts")
}

async fn connect_with(config: Config) -> RedisBackend {
    RedisBackend::connect(config).await.expect("connects").0
}

async fn connect(server: &EmbeddedRedis) -> RedisBackend {
    connect_with(config(server)).await
}

struct Running {
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), TransportError>>,
}

impl Running {
    async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(HANG_GUARD, self.task)
            .await
            .expect("the consumer stops")
            .unwrap()
            .unwrap();
    }
}

fn consume<H: Handler + 'static>(b: &RedisBackend, sub: SubscriptionConfig, h: Arc<H>) -> Running {
    let (trigger, shutdown) = Shutdown::new();
    let backend = b.clone();
    Running {
        trigger,
        task: tokio::spawn(async move { backend.run(sub, h, shutdown).await }),
    }
}

async fn command(b: &RedisBackend, cmd: &'static str, args: Vec<Value>) -> Value {
    b.client()
        .custom(
            CustomCommand::new_static(cmd, ClusterHash::Random, false),
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

async fn raw(b: &RedisBackend, cmd: &'static str, args: Vec<&str>) -> Value {
    command(b, cmd, args.into_iter().map(Value::from).collect()).await
}

const STREAM: &str = "kw:{orders}:s:orders";
const DEAD_LETTERS: &str = "kw:{orders}:s:orders_dlq";

fn group_key(group: &str, part: &str) -> String {
    format!("kw:{{orders}}:g:orders:{group}:{part}")
}

fn ids(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter().map(|s| s.id.clone()).collect()
}

/// How many times each message was handled.
fn counts(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in seen {
        *counts.entry(s.id.clone()).or_default() += 1;
    }
    counts
}

/// `name value name value ...` (RESP2) or a map (RESP3), as pairs.
fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .map(|(k, v)| (k.as_str_lossy().into_owned(), v))
            .collect(),
        other => {
            let mut out = Vec::new();
            let mut items = other.into_array().into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((k.as_string().unwrap_or_default(), v));
            }
            out
        }
    }
}

fn get(pairs: &[(String, Value)], name: &str) -> Value {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null)
}

/// Whether `group` of `orders` owes nothing: every entry read, none pending, waiting behind its
/// key or due again. Until something is published, no delivery can follow, so a log taken
/// after this is final.
async fn drained(b: &RedisBackend, group: &str) -> bool {
    let stream = pairs(raw(b, "XINFO", vec!["STREAM", STREAM]).await);
    let last = get(&stream, "last-generated-id").as_string();
    let groups = raw(b, "XINFO", vec!["GROUPS", STREAM]).await.into_array();
    let Some(g) = groups
        .into_iter()
        .map(pairs)
        .find(|g| get(g, "name").as_string().as_deref() == Some(group))
    else {
        return false;
    };
    let size = |cmd, part| {
        let key = group_key(group, part);
        async move { raw(b, cmd, vec![&key]).await.as_u64() }
    };
    get(&g, "pending").as_u64() == Some(0)
        && get(&g, "last-delivered-id").as_string() == last
        && size("HLEN", "heads").await == Some(0)
        && size("ZCARD", "waiting").await == Some(0)
        && size("ZCARD", "due").await == Some(0)
}

/// Wait until the log holds every id of `expected` and `group` owes nothing; the final log.
async fn wait_drained(
    b: &RedisBackend,
    group: &str,
    seen: &Arc<Mutex<Vec<Seen>>>,
    expected: &BTreeSet<String>,
) -> Vec<Seen> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let handled = ids(&seen.lock().unwrap());
        if handled.is_superset(expected) && drained(b, group).await {
            return seen.lock().unwrap().clone();
        }
        let missing: Vec<&String> = expected.difference(&handled).collect();
        assert!(
            Instant::now() < deadline,
            "waited {HANG_GUARD:?} for group {group} to handle everything and owe nothing; never handled: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outgoing(id: &str, pk: &str, payload: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        id: MessageId::new(id).unwrap(),
        partition_key: pk.into(),
        payload: payload.to_vec(),
        metadata: Default::default(),
    }
}

/// Publish, retrying while the server is coming back.
async fn publish_through_restart(b: &RedisBackend, message: OutgoingMessage) -> PublishReceipt {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        match b.publish("orders", message.clone()).await {
            Ok(r) => return r,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("publish after restart: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_no_acknowledged_publish() {
    let mut server = start(true);
    let b = connect(&server).await;
    for n in 0..50 {
        let receipt = send(&b, "orders", &format!("o-{n}"), &format!("k{}", n % 5), "x").await;
        assert_eq!(receipt, PublishReceipt::Published);
    }
    server.kill();
    server
        .restart()
        .expect("restarts on the same port and data");
    // The client reconnects by itself; publishing goes on, duplicates still dropped.
    let receipt = publish_through_restart(&b, outgoing("o-0", "k0", b"again")).await;
    assert_eq!(
        receipt,
        PublishReceipt::Duplicate,
        "the dedup key survived the crash"
    );
    send(&b, "orders", "o-50", "k0", "after").await;
    let seen = log();
    let c = consume(&b, patient("orders", "g"), Recorder::acking("c", &seen));
    let expected: BTreeSet<String> = (0..=50).map(|n| format!("o-{n}")).collect();
    let all = wait_drained(&b, "g", &seen, &expected).await;
    c.stop().await;
    // Nothing fails while they are consumed (no crash, no timeout: visibility is an hour), so
    // each acknowledged publish is handled exactly once, and the dropped duplicate never.
    let once: BTreeMap<String, usize> = expected.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(counts(&all), once);
    assert_eq!(of(&all, "o-0")[0].payload, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_resumes_after_a_server_crash() {
    let mut server = start(true);
    let b = connect(&server).await;
    let seen = log();
    let c = consume(&b, quick("orders", "g"), Recorder::acking("c", &seen));
    for n in 0..20 {
        send(&b, "orders", &format!("a-{n}"), "k", "x").await;
    }
    wait_for(&seen, 20, HANG_GUARD).await;
    server.kill();
    server.restart().unwrap();
    for n in 0..20 {
        publish_through_restart(&b, outgoing(&format!("b-{n}"), "k", b"y")).await;
    }
    // Acks in flight at the kill may be lost, so some `a-*` can come again (at least once);
    // wait for every `b-*`, then check their order.
    let b_ids = |seen: &[Seen]| -> Vec<usize> {
        let mut first = Vec::new();
        for s in seen {
            if let Some(n) = s.id.strip_prefix("b-").map(|n| n.parse::<usize>().unwrap()) {
                if !first.contains(&n) {
                    first.push(n);
                }
            }
        }
        first
    };
    let all = wait_until(
        &seen,
        "every message published after the restart",
        HANG_GUARD,
        |s| b_ids(s).len() == 20,
    )
    .await;
    c.stop().await;
    assert_eq!(b_ids(&all), (0..20).collect::<Vec<_>>(), "in publish order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_deleted_while_pending_becomes_a_tombstone() {
    let server = start(false);
    let b = connect(&server).await;
    send(&b, "orders", "o-1", "k", "doomed").await;
    send(&b, "orders", "o-2", "k", "next").await;
    // A worker takes o-1 and dies holding it.
    let hung = log();
    let taken = Arc::new(Mutex::new(false));
    let mark = taken.clone();
    let dying = consume(
        &b,
        quick("orders", "g"),
        Recorder::new("dying", &hung, move |_| {
            *mark.lock().unwrap() = true;
            std::future::pending::<Outcome>()
        }),
    );
    assert!(
        poll(HANG_GUARD, || *taken.lock().unwrap()).await,
        "the first worker never got o-1"
    );
    dying.task.abort();
    // Someone deletes it underneath.
    let first = raw(&b, "XRANGE", vec![STREAM, "-", "+", "COUNT", "1"]).await;
    let entry = first.into_array()[0].clone().into_array()[0]
        .as_string()
        .unwrap();
    raw(&b, "XDEL", vec![STREAM, &entry]).await;

    let seen = log();
    let dead = log();
    let c = consume(&b, quick("orders", "g"), Recorder::acking("c", &seen));
    let dlq = consume(
        &b,
        quick("orders_dlq", "ops"),
        Recorder::acking("dlq", &dead),
    );
    let letters = wait_for(&dead, 1, HANG_GUARD).await;
    let got = wait_for(&seen, 1, HANG_GUARD).await;
    c.stop().await;
    dlq.stop().await;
    let m = &letters[0].metadata;
    assert_eq!(m["dlq.tombstone"], "1");
    assert_eq!(m["dlq.stream_entry"], entry);
    assert_eq!(m["dlq.detail.kind"], "tombstone");
    assert_eq!(letters[0].partition_key, "k");
    assert_eq!(got[0].id, "o-2", "the key's next message goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_strand_nothing() {
    let server = start(false);
    let b = connect(&server).await;
    // The kills come from a connection of their own: `CLIENT KILL` spares the caller's.
    let admin = connect(&server).await;
    let seen = log();
    // The first message of each round is held in the handler until its round's kill is done,
    // so every kill lands while a delivery is in flight.
    let held = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let freed = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let (in_handler, free) = (held.clone(), freed.clone());
    let handler = move |d: &Delivery| {
        let id = d.id.clone();
        let hostage = id
            .strip_prefix("o-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 40 == 0);
        if hostage {
            in_handler.lock().unwrap().insert(id.clone());
        }
        let free = free.clone();
        async move {
            if hostage {
                poll(HANG_GUARD, || free.lock().unwrap().contains(&id)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Outcome::Ack
        }
    };
    // Visibility is an hour: finishing at all means nothing waited for a timeout.
    let c = consume(
        &b,
        patient("orders", "g"),
        Recorder::new("c", &seen, handler),
    );
    let client_id = |b: &RedisBackend| {
        let b = b.clone();
        async move { raw(&b, "CLIENT", vec!["ID"]).await.as_i64().unwrap() }
    };
    for round in 0..5 {
        for n in round * 40..(round + 1) * 40 {
            send(&b, "orders", &format!("o-{n}"), &format!("k{}", n % 7), "x").await;
        }
        let hostage = format!("o-{}", round * 40);
        assert!(
            poll(HANG_GUARD, || held.lock().unwrap().contains(&hostage)).await,
            "round {round}: {hostage} never reached the handler"
        );
        let before = client_id(&b).await;
        // Every other client connection: the backend's (claims, settles, publishes) and the
        // consumer's blocking read.
        let killed = raw(&admin, "CLIENT", vec!["KILL", "TYPE", "normal"])
            .await
            .as_i64()
            .unwrap();
        assert!(killed > 0, "round {round}: CLIENT KILL killed nothing");
        let after = client_id(&b).await;
        assert_ne!(
            before, after,
            "round {round}: the backend's connection was not replaced"
        );
        freed.lock().unwrap().insert(hostage);
    }
    let expected: BTreeSet<String> = (0..200).map(|n| format!("o-{n}")).collect();
    let all = wait_drained(&b, "g", &seen, &expected).await;
    c.stop().await;
    // A lost connection loses no settle: the client re-sends what was in flight (a settle
    // that had already applied is refused as stale), and a claim whose reply was lost is
    // recovered after the reconnect. So each message is handled exactly once.
    let once: BTreeMap<String, usize> = expected.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(counts(&all), once);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_frees_consumed_entries_but_never_pending_or_postponed_ones() {
    let server = start(false);
    let b = connect(&server).await;
    for n in 0..100 {
        send(
            &b,
            "orders",
            &format!("o-{n}"),
            &format!("k{}", n % 10),
            "x",
        )
        .await;
    }
    // Trimming works at millisecond granularity: entries of the postponed one's millisecond
    // stay with it. Publish it in a later millisecond (by the server's clock), so exactly the
    // hundred consumed entries can go.
    let newest = raw(&b, "XREVRANGE", vec![STREAM, "+", "-", "COUNT", "1"]).await;
    let newest_ms: u64 = newest.into_array()[0].clone().into_array()[0]
        .as_string()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let time = raw(&b, "TIME", vec![]).await.into_array();
        let now_ms = time[0].as_u64().unwrap() * 1000 + time[1].as_u64().unwrap() / 1000;
        if now_ms > newest_ms {
            break;
        }
        assert!(Instant::now() < deadline, "the server clock stands still");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    send(&b, "orders", "late", "slow-key", "x").await;
    let seen = log();
    let decide = |d: &Delivery| {
        let postpone = d.id == "late";
        async move {
            if postpone {
                Outcome::Postpone(Duration::from_secs(3600))
            } else {
                Outcome::Ack
            }
        }
    };
    let c = consume(
        &b,
        patient("orders", "g"),
        Recorder::new("c", &seen, decide),
    );
    wait_for(&seen, 101, HANG_GUARD).await;
    // Stopping waits for every settle in flight.
    c.stop().await;
    let removed = b.trim("orders").await.unwrap();
    assert_eq!(removed, 100, "every consumed entry goes, and only those");
    let left = raw(&b, "XRANGE", vec![STREAM, "-", "+"]).await.into_array();
    assert_eq!(left.len(), 1);
    let last = left[0].clone().into_array()[1].clone().into_array();
    assert!(
        last.iter()
            .any(|f| f.as_string().as_deref() == Some("late")),
        "the postponed entry stays"
    );
    assert_eq!(b.trim("orders").await.unwrap(), 0, "nothing more to trim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_warns_or_refuses_when_keys_may_be_evicted() {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        extra_args: vec!["--maxmemory-policy".into(), "allkeys-lru".into()],
        ..Default::default()
    })
    .unwrap();
    let (_, preflight) = RedisBackend::connect(config(&server)).await.unwrap();
    assert_eq!(preflight.maxmemory_policy.as_deref(), Some("allkeys-lru"));
    assert!(preflight.warnings.iter().any(|w| w.contains("allkeys-lru")));
    assert!(preflight
        .warnings
        .iter()
        .any(|w| w.contains("appendonly is off")));
    let mut strict = config(&server);
    strict.redis.eviction_policy = EvictionCheck::Refuse;
    let err = RedisBackend::connect(strict).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("refusing to start: maxmemory-policy is \"allkeys-lru\""),
        "{err}"
    );

    let clean = start(true);
    let (_, preflight) = RedisBackend::connect(config(&clean)).await.unwrap();
    assert!(preflight.warnings.is_empty(), "{:?}", preflight.warnings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_bad_group_names_are_refused() {
    let server = start(false);
    let b = connect(&server).await;
    let err = b
        .publish("nope", outgoing("x", "k", b""))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), TransportErrorKind::Invalid);
    assert!(err.to_string().contains("\"nope\" is not in the registry"));
    let (_, shutdown) = Shutdown::new();
    let err = b
        .run(
            quick("orders", "Bad Group"),
            Recorder::acking("c", &log()),
            shutdown,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("consumer group \"Bad Group\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_work_or_releases_it() {
    let server = start(false);
    let mut config = config(&server);
    config.redis.shutdown_deadline = Duration::from_secs(2);
    let b = connect_with(config).await;
    send(&b, "orders", "finishing", "a", "x").await;
    send(&b, "orders", "endless", "b", "x").await;
    let seen = log();
    let started = Arc::new(Mutex::new(0));
    let mark = started.clone();
    let (trigger, shutdown) = Shutdown::new();
    let stopping = shutdown.clone();
    // One handler finishes only once shutdown has begun (so it is in flight then); the other
    // never returns.
    let decide = move |d: &Delivery| {
        *mark.lock().unwrap() += 1;
        let endless = d.id == "endless";
        let mut stopping = stopping.clone();
        async move {
            if endless {
                std::future::pending::<()>().await;
            }
            stopping.wait().await;
            Outcome::Ack
        }
    };
    let handler = Recorder::new("c", &seen, decide);
    let backend = b.clone();
    let task =
        tokio::spawn(async move { backend.run(patient("orders", "g"), handler, shutdown).await });
    assert!(
        poll(HANG_GUARD, || *started.lock().unwrap() == 2).await,
        "both deliveries reach the handler"
    );
    trigger.trigger();
    // The endless handler never returns: stopping at all shows the deadline was kept.
    tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("stopped at the shutdown deadline")
        .unwrap()
        .unwrap();
    assert_eq!(
        ids(&seen.lock().unwrap()),
        BTreeSet::from(["finishing".to_owned()]),
        "the delivery in flight at shutdown finished"
    );
    // The released delivery goes to the next consumer as the same attempt, without waiting
    // for the visibility timeout (an hour).
    let next = log();
    let c2 = consume(&b, patient("orders", "g"), Recorder::acking("next", &next));
    let got = wait_for(&next, 1, HANG_GUARD).await;
    c2.stop().await;
    assert_eq!((got[0].id.as_str(), got[0].attempt), ("endless", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_outcomes_and_render_for_prometheus() {
    let server = start(false);
    let b = connect(&server).await;
    send(&b, "orders", "o-1", "k", "x").await;
    send(&b, "orders", "o-1", "k", "x").await;
    send(&b, "orders", "o-2", "k", "x").await;
    let seen = log();
    let decide = |d: &Delivery| {
        let reject = d.id == "o-2";
        async move {
            if reject {
                Outcome::Reject(keyway_runtime::transport::Failure::new("no"))
            } else {
                Outcome::Ack
            }
        }
    };
    let c = consume(
        &b,
        patient("orders", "g"),
        Recorder::new("c", &seen, decide),
    );
    wait_for(&seen, 2, HANG_GUARD).await;
    // Stopping waits for both settles, which count the outcomes.
    c.stop().await;
    let m = b.metrics();
    assert_eq!(
        m.counter(
            "keyway_publish_total",
            &[("topic", "orders"), ("result", "published")]
        ),
        2
    );
    assert_eq!(
        m.counter(
            "keyway_publish_total",
            &[("topic", "orders"), ("result", "duplicate")]
        ),
        1
    );
    let labels = |outcome| [("topic", "orders"), ("group", "g"), ("outcome", outcome)];
    assert_eq!(m.counter("keyway_deliveries_total", &labels("ack")), 1);
    assert_eq!(m.counter("keyway_deliveries_total", &labels("reject")), 1);
    assert_eq!(
        m.counter(
            "keyway_dead_letters_total",
            &[("topic", "orders"), ("group", "g")]
        ),
        1
    );
    let text = m.render_prometheus();
    assert!(
        text.contains(
            "keyway_handler_seconds_count{topic=\"orders\",group=\"g\",outcome=\"ack\"} 1"
        ),
        "{text}"
    );
}

/// A stream entry's fields, as bytes.
type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;

/// `XADD` an entry as given, bypassing the publish script; its entry id.
async fn xadd(b: &RedisBackend, fields: &[(&[u8], &[u8])]) -> String {
    let mut args: Vec<Value> = vec![STREAM.into(), "*".into()];
    for (name, value) in fields {
        args.push(Value::Bytes(name.to_vec().into()));
        args.push(Value::Bytes(value.to_vec().into()));
    }
    command(b, "XADD", args).await.as_string().unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_bytes().map(<[u8]>::to_vec).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_dead_lettered_and_the_subscription_goes_on() {
    let server = start(false);
    let b = connect(&server).await;
    let at: &[u8] = b"1700000000000";
    // Entries written by hand and what their dead letters must say; after each, a good
    // message on key `k`, the key most of them hold too.
    let malformed: Vec<(Fields<'_>, &str)> = vec![
        (
            vec![(b"pk", b"k"), (b"at", at), (b"payload", b"1")],
            "no `id` field",
        ),
        (
            vec![(b"id", b"m-2"), (b"at", at), (b"payload", b"2")],
            "no `pk` field",
        ),
        (
            vec![(b"id", b"m-3"), (b"pk", b"k"), (b"payload", b"3")],
            "no `at` field",
        ),
        (
            vec![
                (b"id", b"m-4"),
                (b"pk", b"k"),
                (b"at", b"soon"),
                (b"payload", b"4"),
            ],
            "`at` is not a number of milliseconds",
        ),
        (
            vec![
                (b"id", b"m-5"),
                (b"id", b"m-5-again"),
                (b"pk", b"k"),
                (b"at", at),
                (b"payload", b"5"),
            ],
            "`id` appears 2 times",
        ),
        (
            vec![
                (b"id", b"m-6"),
                (b"pk", b"\xff\xfe"),
                (b"at", at),
                (b"payload", b"6"),
            ],
            "`pk` is not UTF-8",
        ),
        (
            vec![
                (b"id", b"m-7"),
                (b"pk", b"k"),
                (b"at", at),
                (b"payload", b"7"),
                (b"m:\xc3\x28", b"v"),
            ],
            "a metadata field name (`m:...`) is not UTF-8",
        ),
        (
            vec![
                (b"id", b"m-8"),
                (b"pk", b"k"),
                (b"at", at),
                (b"payload", b"8"),
                (b"m:trace", b"\xff"),
            ],
            "metadata `m:trace` is not UTF-8",
        ),
    ];
    let mut bad = Vec::new();
    let mut good = BTreeSet::new();
    send(&b, "orders", "g-0", "k", "good").await;
    good.insert("g-0".to_owned());
    for (n, (fields, reason)) in malformed.iter().enumerate() {
        bad.push((xadd(&b, fields).await, fields, *reason));
        let id = format!("g-{}", n + 1);
        send(&b, "orders", &id, "k", "good").await;
        good.insert(id);
    }
    // A field the envelope does not know is ignored, even when its name is not UTF-8.
    xadd(
        &b,
        &[
            (b"id", b"odd-name"),
            (b"pk", b"k"),
            (b"at", at),
            (b"payload", b"good"),
            (b"\xff\xfe", b"whatever"),
        ],
    )
    .await;
    good.insert("odd-name".to_owned());
    send(&b, "orders", "g-last", "k", "good").await;
    good.insert("g-last".to_owned());

    let seen = log();
    let dead = log();
    let c = consume(&b, patient("orders", "g"), Recorder::acking("c", &seen));
    let dlq = consume(
        &b,
        patient("orders_dlq", "ops"),
        Recorder::acking("dlq", &dead),
    );
    let all = wait_drained(&b, "g", &seen, &good).await;
    let letters = wait_for(&dead, bad.len(), HANG_GUARD).await;
    c.stop().await;
    dlq.stop().await;

    // Every good message was handled once; no malformed entry reached the handler.
    let once: BTreeMap<String, usize> = good.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(counts(&all), once);
    // Each malformed entry is a dead letter that itself reads as a message, naming the
    // problem, with the entry's fields kept byte for byte under `raw:`.
    let stored = command(
        &b,
        "XRANGE",
        vec![DEAD_LETTERS.into(), "-".into(), "+".into()],
    )
    .await
    .into_array();
    assert_eq!(stored.len(), bad.len());
    for (entry, fields, reason) in &bad {
        let letter = letters
            .iter()
            .find(|l| l.id == format!("malformed:{entry}"))
            .unwrap_or_else(|| panic!("no dead letter for {entry} ({reason})"));
        let m = &letter.metadata;
        assert_eq!(m["dlq.malformed"], "1");
        assert_eq!(m["dlq.detail.kind"], "malformed");
        assert_eq!(m["dlq.stream_entry"], *entry);
        assert_eq!(m["dlq.original_topic"], "orders");
        assert_eq!(
            m["dlq.last_error"],
            format!("malformed stream entry: {reason}"),
            "{entry}"
        );
        let raw_fields: Vec<(Vec<u8>, Vec<u8>)> = stored
            .iter()
            .map(|e| e.clone().into_array())
            .find(|e| {
                let fields = e[1].clone().into_array();
                fields.chunks(2).any(|kv| {
                    kv[0].as_str().as_deref() == Some("m:dlq.stream_entry")
                        && kv[1].as_str().as_deref() == Some(entry.as_str())
                })
            })
            .expect("the dead letter is stored")[1]
            .clone()
            .into_array()
            .chunks(2)
            .filter_map(|kv| {
                let name = bytes(&kv[0]);
                let original = name.strip_prefix(b"raw:")?.to_vec();
                Some((original, bytes(&kv[1])))
            })
            .collect();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(raw_fields, expected, "{entry} ({reason}) kept as it was");
    }
    let m = b.metrics();
    assert_eq!(
        m.counter(
            "keyway_deliveries_total",
            &[
                ("topic", "orders"),
                ("group", "g"),
                ("outcome", "malformed")
            ]
        ),
        bad.len() as u64
    );
    assert_eq!(
        m.counter(
            "keyway_dead_letters_total",
            &[("topic", "orders"), ("group", "g")]
        ),
        bad.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_another_protocol_version_are_refused_not_delivered_or_dead_lettered() {
    let server = start(false);
    let b = connect(&server).await;
    // What the publish script writes: the version spoken here.
    send(&b, "orders", "o-1", "k", "ok").await;
    let newest = raw(&b, "XREVRANGE", vec![STREAM, "+", "-", "COUNT", "1"]).await;
    let fields: Vec<String> = newest.into_array()[0].clone().into_array()[1]
        .clone()
        .into_array()
        .iter()
        .filter_map(Value::as_string)
        .collect();
    let v = fields.iter().position(|f| f == "v").expect("a `v` field");
    assert_eq!(fields[v + 1], "1");

    // A newer writer's entry, after one of ours.
    let at: &[u8] = b"1700000000000";
    let entry = xadd(
        &b,
        &[
            (b"id", b"o-2"),
            (b"pk", b"k2"),
            (b"at", at),
            (b"payload", b"future"),
            (b"v", b"2"),
        ],
    )
    .await;
    let seen = log();
    let (_trigger, shutdown) = Shutdown::new();
    let consumer = b.clone();
    let recorder = Recorder::acking("c", &seen);
    // A consumer started now refuses the stream on its first look.
    let ended = tokio::time::timeout(
        HANG_GUARD,
        consumer.run(quick("orders", "g"), recorder.clone(), shutdown.clone()),
    )
    .await
    .expect("the loop ends");
    let error = ended.expect_err("the stream is refused").to_string();
    assert!(
        error.contains(&format!("entry {entry} was written by protocol version 2"))
            && error.contains("this client speaks version 1"),
        "{error}"
    );
    // So does a publisher that has not written to it yet.
    let fresh = connect(&server).await;
    let refused = fresh
        .publish(
            "orders",
            OutgoingMessage {
                id: MessageId::new("o-3").unwrap(),
                partition_key: "k".into(),
                payload: b"x".to_vec(),
                metadata: Default::default(),
            },
        )
        .await
        .expect_err("the publish is refused");
    assert!(
        refused.to_string().contains("protocol version 2"),
        "{refused}"
    );

    // A consumer that meets such an entry while reading stops after what it read before it,
    // and leaves the entry pending: no dead letter, no delivery of it.
    send(&b, "orders", "o-4", "k", "after").await;
    raw(&b, "XDEL", vec![STREAM, &entry]).await;
    let newer = xadd(
        &b,
        &[
            (b"id", b"o-5"),
            (b"pk", b"k5"),
            (b"at", at),
            (b"payload", b"future"),
            (b"v", b"2"),
        ],
    )
    .await;
    let late = xadd(
        &b,
        &[
            (b"id", b"o-6"),
            (b"pk", b"k6"),
            (b"at", at),
            (b"payload", b"ok"),
        ],
    )
    .await;
    assert!(!late.is_empty());
    let seen = log();
    let (_trigger, shutdown) = Shutdown::new();
    let recorder = Recorder::acking("c2", &seen);
    let consumer = connect(&server).await;
    // The newest entry (o-6, no `v`: version 1) passes the first look.
    let ended = tokio::time::timeout(
        HANG_GUARD,
        consumer.run(quick("orders", "g2"), recorder, shutdown),
    )
    .await
    .expect("the loop ends");
    let error = ended.expect_err("the loop stops").to_string();
    assert!(
        error.contains(&format!("entry {newer} was written by protocol version 2")),
        "{error}"
    );
    let ids: Vec<String> = seen.lock().unwrap().iter().map(|s| s.id.clone()).collect();
    assert!(!ids.contains(&"o-5".to_owned()), "{ids:?}");
    let pending = raw(&b, "XPENDING", vec![STREAM, "g2", "-", "+", "10"]).await;
    let pending: Vec<String> = pending
        .into_array()
        .iter()
        .filter_map(|p| p.clone().into_array().first().and_then(Value::as_string))
        .collect();
    assert!(pending.contains(&newer), "{pending:?}");
    let dlq = raw(&b, "XLEN", vec![DEAD_LETTERS]).await;
    assert_eq!(dlq.as_i64(), Some(0));
}
