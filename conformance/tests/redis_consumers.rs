//! Consumers left behind in a group by processes that stopped or crashed are removed once they
//! have nothing pending and have been idle past `redis.consumer_idle_removal`; one that still
//! has pending entries stays until the visibility timeout hands them to a live consumer. The
//! group's health is in the metrics.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway_conformance::backend_suite::{
    log, patient, quick, send, wait_for_id, Recorder, HANG_GUARD,
};
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown, ShutdownTrigger,
};
use keyway_runtime::transport::{Delivery, Handler, Outcome, SubscriptionConfig, TransportError};

const STREAM: &str = "kw:{orders}:s:orders";

fn start() -> EmbeddedRedis {
    EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts")
}

async fn connect(server: &EmbeddedRedis) -> RedisBackend {
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = server.url();
    config.redis.shutdown_deadline = HANG_GUARD;
    // Look after the group often, and remove consumers idle for a second.
    config.redis.trim_interval = Duration::from_millis(100);
    config.redis.consumer_idle_removal = Duration::from_secs(1);
    RedisBackend::connect(config).await.expect("connects").0
}

struct Running {
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), TransportError>>,
}

fn consume<H: Handler + 'static>(b: &RedisBackend, sub: SubscriptionConfig, h: Arc<H>) -> Running {
    let (trigger, shutdown) = Shutdown::new();
    let backend = b.clone();
    Running {
        trigger,
        task: tokio::spawn(async move { backend.run(sub, h, shutdown).await }),
    }
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

    /// Vanish as a crashed process would: nothing in flight is settled.
    async fn crash(self) {
        self.task.abort();
        assert!(self.task.await.unwrap_err().is_cancelled());
    }
}

/// A handler that never finishes: it says it started, then waits forever.
struct Stuck(Arc<AtomicBool>);

impl Handler for Stuck {
    async fn handle(&self, _: &Delivery) -> Outcome {
        self.0.store(true, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// The group's consumers as (name, pending), from `XINFO CONSUMERS`.
async fn consumers(b: &RedisBackend, group: &str) -> Vec<(String, i64)> {
    let reply: Result<Value, _> = b
        .client()
        .custom(
            CustomCommand::new_static("XINFO", ClusterHash::Random, false),
            vec![Value::from("CONSUMERS"), STREAM.into(), group.into()],
        )
        .await;
    let reply = match reply {
        Ok(v) => v,
        // Before the first consumer starts, there is no group.
        Err(e) if e.details().starts_with("NOGROUP") => return Vec::new(),
        Err(e) => panic!("XINFO CONSUMERS: {e}"),
    };
    let mut out = Vec::new();
    for c in reply.into_array() {
        let (mut name, mut pending) = (String::new(), -1);
        let fields = c.into_array();
        for pair in fields.chunks(2) {
            match pair[0].as_string().as_deref() {
                Some("name") => name = pair[1].as_string().unwrap_or_default(),
                Some("pending") => pending = pair[1].as_i64().unwrap_or(-1),
                _ => {}
            }
        }
        out.push((name, pending));
    }
    out
}

fn names(consumers: &[(String, i64)]) -> BTreeSet<String> {
    consumers.iter().map(|(n, _)| n.clone()).collect()
}

/// Poll until `done` holds for the group's consumers; they are returned.
async fn wait_for_consumers(
    b: &RedisBackend,
    group: &str,
    what: &str,
    done: impl Fn(&[(String, i64)]) -> bool,
) -> Vec<(String, i64)> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let now = consumers(b, group).await;
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "waited {HANG_GUARD:?} for {what}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Start a consumer that crashes while it works on a delivery; its name.
async fn crash_while_working(b: &RedisBackend, sub: SubscriptionConfig) -> String {
    let group = sub.group.clone();
    let before = names(&consumers(b, &group).await);
    let started = Arc::new(AtomicBool::new(false));
    let stuck = consume(b, sub, Arc::new(Stuck(started.clone())));
    let deadline = Instant::now() + HANG_GUARD;
    while !started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the stuck handler never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stuck.crash().await;
    let after = consumers(b, &group).await;
    let new: Vec<_> = after.iter().filter(|(n, _)| !before.contains(n)).collect();
    assert_eq!(new.len(), 1, "{after:?}");
    assert_eq!(
        new[0].1, 1,
        "the crashed consumer owns its delivery: {after:?}"
    );
    new[0].0.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumers_with_nothing_pending_are_removed_and_one_with_pending_is_kept() {
    let server = start();
    let b = connect(&server).await;
    send(&b, "orders", "stuck", "a", "x").await;
    // A visibility timeout of an hour: the crashed consumer keeps its entry all test long.
    let crashed = crash_while_working(&b, patient("orders", "g")).await;

    // Consumers that handle one message each and stop cleanly: nothing pending. (Redis 7.0
    // adds a consumer to the group when it is first handed an entry.)
    let mut stopped = BTreeSet::new();
    for i in 0..3 {
        let id = format!("b{i}");
        send(&b, "orders", &id, &format!("k{i}"), "x").await;
        let known = names(&consumers(&b, "g").await);
        let seen = log();
        let c = consume(&b, patient("orders", "g"), Recorder::acking(&id, &seen));
        wait_for_id(&seen, &id, HANG_GUARD).await;
        c.stop().await;
        let new: BTreeSet<String> = names(&consumers(&b, "g").await)
            .difference(&known)
            .cloned()
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        stopped.extend(new);
    }
    assert_eq!(stopped.len(), 3);

    // A live consumer removes them once idle past the threshold; the crashed one stays.
    send(&b, "orders", "l", "kl", "x").await;
    let seen = log();
    let live = consume(&b, patient("orders", "g"), Recorder::acking("live", &seen));
    wait_for_id(&seen, "l", HANG_GUARD).await;
    let left = wait_for_consumers(&b, "g", "the stopped consumers to be removed", |cs| {
        names(cs).is_disjoint(&stopped) && cs.len() == 2
    })
    .await;
    assert!(left.contains(&(crashed.clone(), 1)), "{left:?}");

    // The group's health, as the live consumer reported it.
    let labels = [("topic", "orders"), ("group", "g")];
    let m = b.metrics();
    let deadline = Instant::now() + HANG_GUARD;
    while m.gauge("keyway_group_consumers", &labels) != Some(2) {
        assert!(Instant::now() < deadline, "{}", m.render_prometheus());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.gauge("keyway_group_pending", &labels), Some(1));
    assert_eq!(m.gauge("keyway_group_lag", &labels), Some(0));
    assert_eq!(m.gauge("keyway_group_held", &labels), Some(0));
    assert_eq!(m.counter("keyway_consumers_removed_total", &labels), 3);
    let text = m.render_prometheus();
    assert!(
        text.contains("# TYPE keyway_group_consumers gauge\nkeyway_group_consumers{topic=\"orders\",group=\"g\"} 2\n"),
        "{text}"
    );
    live.stop().await;
    // The stuck entry was never lost: still pending on the crashed consumer.
    assert!(consumers(&b, "g").await.contains(&(crashed, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_consumer_is_removed_after_its_entries_are_reclaimed() {
    let server = start();
    let b = connect(&server).await;
    send(&b, "orders", "m", "a", "x").await;
    let crashed = crash_while_working(&b, quick("orders", "h")).await;

    // The live consumer takes the entry over after the visibility timeout, then removes the
    // crashed consumer, which has nothing pending any more.
    let seen = log();
    let live = consume(&b, quick("orders", "h"), Recorder::acking("live", &seen));
    let got = wait_for_id(&seen, "m", HANG_GUARD).await;
    assert_eq!(got[0].attempt, 2);
    let left = wait_for_consumers(&b, "h", "the crashed consumer to be removed", |cs| {
        !names(cs).contains(&crashed)
    })
    .await;
    assert_eq!(left.len(), 1, "{left:?}");
    live.stop().await;
}
