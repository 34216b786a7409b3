//! What only a real Redis can show: crashes and restarts of the server, connections killed
//! under the consumer, entries deleted underneath, trimming, preflight and metrics.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway_conformance::backend_suite::{log, quick, send, wait_for, Recorder, Seen};
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, EvictionCheck, RedisBackend, Registry, Shutdown,
    ShutdownTrigger,
};
use keyway_runtime::transport::{
    Handler, Outcome, PublishReceipt, Publisher, SubscriptionConfig, TransportErrorKind,
};

fn config(server: &EmbeddedRedis) -> Config {
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = server.url();
    config.redis.shutdown_deadline = Duration::from_millis(500);
    config
}

fn start(append_only: bool) -> EmbeddedRedis {
    EmbeddedRedis::start(EmbeddedOptions {
        append_only,
        ..Default::default()
    })
    .expect("redis-server starts")
}

async fn connect(server: &EmbeddedRedis) -> RedisBackend {
    RedisBackend::connect(config(server))
        .await
        .expect("connects")
        .0
}

struct Running {
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), keyway_runtime::transport::TransportError>>,
}

impl Running {
    async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap().unwrap();
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

async fn raw(b: &RedisBackend, cmd: &'static str, args: Vec<&str>) -> Value {
    b.client()
        .custom(
            CustomCommand::new_static(cmd, ClusterHash::Random, false),
            args.into_iter().map(Value::from).collect(),
        )
        .await
        .unwrap()
}

const STREAM: &str = "kw:{orders}:s:orders";

fn ids(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter().map(|s| s.id.clone()).collect()
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
    let deadline = Instant::now() + Duration::from_secs(10);
    let receipt = loop {
        match b
            .publish(
                "orders",
                keyway_runtime::transport::OutgoingMessage {
                    id: keyway_runtime::transport::MessageId::new("o-0").unwrap(),
                    partition_key: "k0".into(),
                    payload: b"again".to_vec(),
                    metadata: Default::default(),
                },
            )
            .await
        {
            Ok(r) => break r,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("publish after restart: {e}"),
        }
    };
    assert_eq!(
        receipt,
        PublishReceipt::Duplicate,
        "the dedup key survived the crash"
    );
    send(&b, "orders", "o-50", "k0", "after").await;
    let seen = log();
    let c = consume(&b, quick("orders", "g"), Recorder::acking("c", &seen));
    let got = wait_for(&seen, 51, Duration::from_secs(10)).await;
    c.stop().await;
    assert_eq!(
        ids(&got).len(),
        51,
        "every acknowledged publish is delivered once"
    );
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
    wait_for(&seen, 20, Duration::from_secs(10)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().unwrap();
    for n in 0..20 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match b
                .publish(
                    "orders",
                    keyway_runtime::transport::OutgoingMessage {
                        id: keyway_runtime::transport::MessageId::new(format!("b-{n}")).unwrap(),
                        partition_key: "k".into(),
                        payload: b"y".to_vec(),
                        metadata: Default::default(),
                    },
                )
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while b_ids(&seen.lock().unwrap()).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "not every message published after the restart was handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop().await;
    assert_eq!(
        b_ids(&seen.lock().unwrap()),
        (0..20).collect::<Vec<_>>(),
        "in publish order"
    );
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
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Outcome::Ack
            }
        }),
    );
    while !*taken.lock().unwrap() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    let letters = wait_for(&dead, 1, Duration::from_secs(5)).await;
    let got = wait_for(&seen, 1, Duration::from_secs(5)).await;
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
    let seen = log();
    let slowish = |_: &keyway_runtime::transport::Delivery| async {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Outcome::Ack
    };
    let mut sub = quick("orders", "g");
    sub.visibility_timeout = Duration::from_secs(30);
    let c = consume(&b, sub, Recorder::new("c", &seen, slowish));
    for n in 0..200 {
        send(&b, "orders", &format!("o-{n}"), &format!("k{}", n % 7), "x").await;
        if n % 40 == 20 {
            // Drop every client connection, the consumer's included, mid-stream.
            let _ = raw(&b, "CLIENT", vec!["KILL", "TYPE", "normal"]).await;
        }
    }
    // Visibility timeout is 30 s: finishing well before it means nothing waited for one.
    let got = wait_for(&seen, 200, Duration::from_secs(15)).await;
    c.stop().await;
    assert_eq!(ids(&got).len(), 200);
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
    send(&b, "orders", "late", "slow-key", "x").await;
    let seen = log();
    let decide = |d: &keyway_runtime::transport::Delivery| {
        let postpone = d.id == "late";
        async move {
            if postpone {
                Outcome::Postpone(Duration::from_secs(60))
            } else {
                Outcome::Ack
            }
        }
    };
    let c = consume(&b, quick("orders", "g"), Recorder::new("c", &seen, decide));
    wait_for(&seen, 101, Duration::from_secs(10)).await;
    c.stop().await;
    // Trimming works at millisecond granularity: entries published in the same millisecond
    // as the postponed one stay with it.
    let removed = b.trim("orders").await.unwrap();
    assert!(removed >= 90, "most consumed entries go, {removed} did");
    let left = raw(&b, "XRANGE", vec![STREAM, "-", "+"]).await.into_array();
    assert_eq!(left.len() as u64, 101 - removed);
    let last = left.last().unwrap().clone().into_array()[1]
        .clone()
        .into_array();
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
        .publish(
            "nope",
            keyway_runtime::transport::OutgoingMessage {
                id: keyway_runtime::transport::MessageId::new("x").unwrap(),
                partition_key: "k".into(),
                payload: vec![],
                metadata: Default::default(),
            },
        )
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
    let b = connect(&server).await;
    send(&b, "orders", "quick", "a", "x").await;
    send(&b, "orders", "endless", "b", "x").await;
    let seen = log();
    let started = Arc::new(Mutex::new(0));
    let mark = started.clone();
    let decide = move |d: &keyway_runtime::transport::Delivery| {
        *mark.lock().unwrap() += 1;
        let endless = d.id == "endless";
        async move {
            tokio::time::sleep(Duration::from_millis(if endless { 60_000 } else { 200 })).await;
            Outcome::Ack
        }
    };
    let c = consume(&b, quick("orders", "g"), Recorder::new("c", &seen, decide));
    while *started.lock().unwrap() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = Instant::now();
    c.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopped within the deadline"
    );
    assert_eq!(
        ids(&seen.lock().unwrap()),
        BTreeSet::from(["quick".to_owned()])
    );
    // The released delivery goes to the next consumer at once, as the same attempt.
    let next = log();
    let c2 = consume(&b, quick("orders", "g"), Recorder::acking("next", &next));
    let got = wait_for(&next, 1, Duration::from_millis(300)).await;
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
    let decide = |d: &keyway_runtime::transport::Delivery| {
        let reject = d.id == "o-2";
        async move {
            if reject {
                Outcome::Reject(keyway_runtime::transport::Failure::new("no"))
            } else {
                Outcome::Ack
            }
        }
    };
    let c = consume(&b, quick("orders", "g"), Recorder::new("c", &seen, decide));
    wait_for(&seen, 2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
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
