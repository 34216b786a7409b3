//! The semantic suite every queue backend must pass, written once against
//! [`BackendUnderTest`]. A backend's test file instantiates each check with a fresh backend
//! (see `tests/redis_semantics.rs`).
//!
//! Checks assert on events and counts, not on time:
//! - To show that a message is *not* delivered (a duplicate, a retry after a dead letter), a
//!   check publishes a sentinel after it on the same partition key and waits for the sentinel.
//!   A key's messages are handled one at a time in publish order, so by then every earlier
//!   delivery is in the log and the count is final.
//! - Times are asserted only as lower bounds (a retry waits at least its backoff), which load
//!   cannot break. Where a check needs two things to happen at once, a handler waits for the
//!   other one instead of hoping the scheduler overlaps them.
//! - Visibility timeouts are an hour ([`patient`]) except in the checks about them.
//! - Every wait ends at [`HANG_GUARD`] with a message saying what it waited for, so a failing
//!   backend fails the check instead of hanging it.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyway_runtime::transport::{
    Backoff, BoxFuture, Delivery, Failure, Handler, MessageId, Metadata, Outcome, OutgoingMessage,
    PublishReceipt, Publisher, SubscriptionConfig,
};

/// What the suite needs of a backend.
pub trait BackendUnderTest: Send + Sync + 'static {
    /// Its publisher.
    type Publisher: Publisher + Clone + Send + Sync + 'static;

    /// A publisher to publish with.
    fn publisher(&self) -> Self::Publisher;

    /// Start consuming `sub` with `handler`, as one consumer (a process, say).
    fn consume<H: Handler + 'static>(
        &self,
        sub: SubscriptionConfig,
        handler: Arc<H>,
    ) -> ConsumerHandle;
}

/// A running consumer.
pub struct ConsumerHandle {
    stop: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
    crash: Option<Box<dyn FnOnce() + Send>>,
}

impl ConsumerHandle {
    /// A handle from a graceful stop and an abrupt crash.
    pub fn new(
        stop: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static,
        crash: impl FnOnce() + Send + 'static,
    ) -> Self {
        ConsumerHandle {
            stop: Some(Box::new(stop)),
            crash: Some(Box::new(crash)),
        }
    }

    /// Stop gracefully (finish or release in-flight deliveries).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop().await;
        }
    }

    /// Vanish as a crashed process would: nothing in flight is settled.
    pub fn crash(mut self) {
        if let Some(crash) = self.crash.take() {
            crash();
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        if let Some(crash) = self.crash.take() {
            crash();
        }
    }
}

/// One delivery as a [`Recorder`] saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Message id.
    pub id: String,
    /// Partition key.
    pub partition_key: String,
    /// Attempt number.
    pub attempt: u32,
    /// Payload as text.
    pub payload: String,
    /// Metadata.
    pub metadata: Metadata,
    /// When the handler started and ended.
    pub started: Instant,
    /// When the handler returned.
    pub ended: Instant,
    /// Which consumer (recorder) saw it.
    pub consumer: String,
}

type Decide = dyn Fn(&Delivery) -> BoxFuture<'static, Outcome> + Send + Sync;

/// A handler that records every delivery and answers with a function of it. A delivery is in
/// the log before the handler answers, so before the backend settles it.
pub struct Recorder {
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    decide: Box<Decide>,
}

impl Recorder {
    /// Records into `seen` under `name`, answering with `decide`.
    pub fn new<F, Fut>(name: &str, seen: &Arc<Mutex<Vec<Seen>>>, decide: F) -> Arc<Recorder>
    where
        F: Fn(&Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Arc::new(Recorder {
            name: name.to_owned(),
            seen: seen.clone(),
            decide: Box::new(move |d| Box::pin(decide(d))),
        })
    }

    /// Records and acks.
    pub fn acking(name: &str, seen: &Arc<Mutex<Vec<Seen>>>) -> Arc<Recorder> {
        Recorder::new(name, seen, |_| async { Outcome::Ack })
    }
}

impl Handler for Recorder {
    async fn handle(&self, d: &Delivery) -> Outcome {
        let started = Instant::now();
        let outcome = (self.decide)(d).await;
        self.seen.lock().unwrap().push(Seen {
            id: d.id.clone(),
            partition_key: d.partition_key.clone(),
            attempt: d.attempt,
            payload: String::from_utf8_lossy(&d.payload).into_owned(),
            metadata: d.metadata.clone(),
            started,
            ended: Instant::now(),
            consumer: self.name.clone(),
        });
        outcome
    }
}

/// A fresh shared log.
pub fn log() -> Arc<Mutex<Vec<Seen>>> {
    Arc::new(Mutex::new(Vec::new()))
}

/// How long any wait of the suite may take before the check fails. It only guards against a
/// hang: a healthy backend needs a small fraction of it, even on a loaded machine.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Wait until `done` holds for the log, or panic after `timeout`, naming `what` was awaited;
/// the log at that moment.
pub async fn wait_until(
    seen: &Arc<Mutex<Vec<Seen>>>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Seen]) -> bool,
) -> Vec<Seen> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = seen.lock().unwrap().clone();
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what}; {} deliveries: {:?}",
            now.len(),
            now.iter().map(|s| (&s.id, s.attempt)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `seen` holds `n` entries, or panic after `timeout`.
pub async fn wait_for(seen: &Arc<Mutex<Vec<Seen>>>, n: usize, timeout: Duration) -> Vec<Seen> {
    wait_until(seen, &format!("{n} deliveries"), timeout, |s| s.len() >= n).await
}

/// Wait until a delivery of message `id` is recorded, or panic after `timeout`.
///
/// With a sentinel this makes a count final: a partition key's messages are handled one at a
/// time in publish order, so when a message published after others on the same key is
/// handled, each of those has been handled for the last time and is in the log.
pub async fn wait_for_id(seen: &Arc<Mutex<Vec<Seen>>>, id: &str, timeout: Duration) -> Vec<Seen> {
    wait_until(seen, &format!("a delivery of {id:?}"), timeout, |s| {
        s.iter().any(|d| d.id == id)
    })
    .await
}

/// The deliveries of message `id` in `seen`.
pub fn of<'a>(seen: &'a [Seen], id: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.id == id).collect()
}

/// Poll `ready` until it holds or `timeout` passes; whether it held. For handlers, which
/// must return rather than panic (a panicking handler is a nack, and the check would fail
/// somewhere less clear).
pub async fn poll(timeout: Duration, ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// A subscription with short timings for tests.
pub fn quick(topic: &str, group: &str) -> SubscriptionConfig {
    SubscriptionConfig {
        visibility_timeout: Duration::from_millis(400),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_millis(400),
        },
        ..SubscriptionConfig::new(topic, group)
    }
}

/// [`quick`], but a delivery never times out (an hour): for checks that count deliveries and
/// are not about visibility timeouts, so a slow machine cannot turn a delivery into a
/// redelivery, and anything that happens at all did not wait for a timeout.
pub fn patient(topic: &str, group: &str) -> SubscriptionConfig {
    SubscriptionConfig {
        visibility_timeout: Duration::from_secs(3600),
        ..quick(topic, group)
    }
}

/// Publish one message; the receipt.
pub async fn send<P: Publisher>(
    p: &P,
    topic: &str,
    id: &str,
    pk: &str,
    payload: &str,
) -> PublishReceipt {
    p.publish(
        topic,
        OutgoingMessage {
            id: MessageId::new(id).unwrap(),
            partition_key: pk.to_owned(),
            payload: payload.as_bytes().to_vec(),
            metadata: Metadata::from([("trace".to_owned(), format!("t-{id}"))]),
        },
    )
    .await
    .expect("publish")
}

/// A duplicate (topic, partition key, id) is accepted and dropped, also after the first copy
/// was consumed; a different partition key is a different message.
pub async fn dedup_outlives_consumption<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    assert_eq!(
        send(&p, "orders", "o-1", "k", "first").await,
        PublishReceipt::Published
    );
    let seen = log();
    let c = b.consume(patient("orders", "g"), Recorder::acking("c", &seen));
    wait_for_id(&seen, "o-1", HANG_GUARD).await;
    assert_eq!(
        send(&p, "orders", "o-1", "k", "again").await,
        PublishReceipt::Duplicate
    );
    assert_eq!(
        send(&p, "orders", "o-1", "other-key", "new").await,
        PublishReceipt::Published
    );
    // Had the duplicate been stored, it would be handled before this.
    send(&p, "orders", "sentinel", "k", "").await;
    let all = wait_until(
        &seen,
        "the sentinel and the other key's o-1",
        HANG_GUARD,
        |s| {
            s.iter().any(|d| d.id == "sentinel") && s.iter().any(|d| d.partition_key == "other-key")
        },
    )
    .await;
    c.stop().await;
    let payloads = |pk: &str| {
        of(&all, "o-1")
            .into_iter()
            .filter(|s| s.partition_key == pk)
            .map(|s| s.payload.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        payloads("k"),
        ["first"],
        "the duplicate was never delivered"
    );
    assert_eq!(payloads("other-key"), ["new"]);
}

/// Concurrent publishers of the same message: exactly one is stored.
pub async fn concurrent_publishers_of_one_id<B: BackendUnderTest>(b: &B) {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let p = b.publisher();
        tasks.push(tokio::spawn(async move {
            send(&p, "orders", "o-7", "k", "x").await
        }));
    }
    let mut published = 0;
    for t in tasks {
        if t.await.unwrap() == PublishReceipt::Published {
            published += 1;
        }
    }
    assert_eq!(published, 1);
    send(&b.publisher(), "orders", "sentinel", "k", "").await;
    let seen = log();
    let c = b.consume(patient("orders", "g"), Recorder::acking("c", &seen));
    let all = wait_for_id(&seen, "sentinel", HANG_GUARD).await;
    c.stop().await;
    assert_eq!(of(&all, "o-7").len(), 1, "one copy stored: {all:?}");
}

/// Several consumers of one group: each partition key one at a time, in publish order;
/// different keys in parallel, on more than one consumer.
pub async fn per_key_order_across_consumers<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    let keys = ["a", "b", "c", "d", "e"];
    let per_key = 12;
    for n in 0..per_key {
        for k in keys {
            send(&p, "orders", &format!("{k}-{n}"), k, &n.to_string()).await;
        }
    }
    let seen = log();
    // Every delivery waits until two consumers have started one: with four in flight per
    // consumer and five keys, a second consumer must take a key for anything to finish. So
    // two consumers work at once, on different keys, however the machine schedules them; a
    // backend that serialises keys or consumers fails at the hang guard.
    let working = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let consumers: Vec<_> = (0..3)
        .map(|i| {
            let name = format!("c{i}");
            let working = working.clone();
            let gate = {
                let name = name.clone();
                move |_: &Delivery| {
                    working.lock().unwrap().insert(name.clone());
                    let working = working.clone();
                    async move {
                        poll(HANG_GUARD, || working.lock().unwrap().len() >= 2).await;
                        Outcome::Ack
                    }
                }
            };
            let mut sub = patient("orders", "g");
            sub.batch_size = 4;
            b.consume(sub, Recorder::new(&name, &seen, gate))
        })
        .collect();
    let all = wait_for(&seen, keys.len() * per_key, HANG_GUARD).await;
    for c in consumers {
        c.stop().await;
    }
    for k in keys {
        let of_key: Vec<&Seen> = all.iter().filter(|s| s.partition_key == k).collect();
        let order: Vec<usize> = of_key.iter().map(|s| s.payload.parse().unwrap()).collect();
        assert_eq!(
            order,
            (0..per_key).collect::<Vec<_>>(),
            "key {k} out of order"
        );
        for pair in of_key.windows(2) {
            assert!(
                pair[1].started >= pair[0].ended,
                "key {k}: two deliveries overlapped"
            );
        }
    }
    let overlapping = all.iter().enumerate().any(|(i, a)| {
        all[i + 1..].iter().any(|b| {
            a.partition_key != b.partition_key && b.started < a.ended && a.started < b.ended
        })
    });
    assert!(overlapping, "different keys never ran in parallel");
    let consumers_used: BTreeSet<&str> = all.iter().map(|s| s.consumer.as_str()).collect();
    assert!(
        consumers_used.len() > 1,
        "one consumer did all the work: {consumers_used:?}"
    );
}

/// Two groups each see every message.
pub async fn groups_are_independent<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    for n in 0..10 {
        send(&p, "orders", &format!("o-{n}"), &format!("k{}", n % 3), "x").await;
    }
    let (one, two) = (log(), log());
    let c1 = b.consume(patient("orders", "billing"), Recorder::acking("1", &one));
    let c2 = b.consume(patient("orders", "shipping"), Recorder::acking("2", &two));
    let a = wait_for(&one, 10, HANG_GUARD).await;
    let b2 = wait_for(&two, 10, HANG_GUARD).await;
    c1.stop().await;
    c2.stop().await;
    let ids = |v: &[Seen]| v.iter().map(|s| s.id.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&a), ids(&b2));
    assert_eq!(ids(&a).len(), 10);
}

/// Nack: redelivered after the backoff, counted, dead-lettered at max attempts with the last
/// reason and the message as published.
pub async fn nack_backoff_then_dead_letter<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-1", "k", "payload-1").await;
    send(&p, "orders", "sentinel", "k", "").await;
    let seen = log();
    let failing = |d: &Delivery| {
        let (fail, attempt) = (d.id == "o-1", d.attempt);
        async move {
            if fail {
                Outcome::Nack(Failure::new(format!("boom {attempt}")))
            } else {
                Outcome::Ack
            }
        }
    };
    let c = b.consume(patient("orders", "g"), Recorder::new("c", &seen, failing));
    let dead = log();
    let dlq = b.consume(patient("orders_dlq", "ops"), Recorder::acking("dlq", &dead));
    let all = wait_for_id(&seen, "sentinel", HANG_GUARD).await;
    let letters = wait_for(&dead, 1, HANG_GUARD).await;
    c.stop().await;
    dlq.stop().await;
    let tries = of(&all, "o-1");
    assert_eq!(
        tries.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [1, 2, 3],
        "three attempts, none after the dead letter"
    );
    // Lower bounds only: a loaded machine makes waits longer, never shorter.
    assert!(tries[1].started.duration_since(tries[0].ended) >= Duration::from_millis(45));
    assert!(tries[2].started.duration_since(tries[1].ended) >= Duration::from_millis(95));
    let letter = &letters[0];
    assert_eq!(
        (
            letter.id.as_str(),
            letter.partition_key.as_str(),
            letter.payload.as_str()
        ),
        ("o-1", "k", "payload-1")
    );
    let m = &letter.metadata;
    assert_eq!(m["trace"], "t-o-1");
    assert_eq!(m["dlq.original_topic"], "orders");
    assert_eq!(m["dlq.failure_count"], "3");
    assert_eq!(m["dlq.last_error"], "boom 3");
    assert!(m["dlq.failed_at"].parse::<u64>().unwrap() > 1_600_000_000_000);
}

/// Reject: dead-lettered at once, with the failure's detail, and not delivered again.
pub async fn reject_dead_letters_with_detail<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-2", "k", "bad").await;
    send(&p, "orders", "sentinel", "k", "").await;
    let seen = log();
    let rejecting = |d: &Delivery| {
        let reject = d.id == "o-2";
        async move {
            if reject {
                Outcome::Reject(Failure::new("unknown queue").with_detail("kind", "validation"))
            } else {
                Outcome::Ack
            }
        }
    };
    let c = b.consume(patient("orders", "g"), Recorder::new("c", &seen, rejecting));
    let dead = log();
    let dlq = b.consume(patient("orders_dlq", "ops"), Recorder::acking("dlq", &dead));
    let all = wait_for_id(&seen, "sentinel", HANG_GUARD).await;
    let letters = wait_for(&dead, 1, HANG_GUARD).await;
    c.stop().await;
    dlq.stop().await;
    assert_eq!(of(&all, "o-2").len(), 1);
    let m = &letters[0].metadata;
    assert_eq!(m["dlq.failure_count"], "1");
    assert_eq!(m["dlq.last_error"], "unknown queue");
    assert_eq!(m["dlq.detail.kind"], "validation");
}

/// With dead-lettering off, a rejected message is dropped (and logged), not redelivered.
pub async fn reject_without_dead_letters_drops<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-3", "k", "bad").await;
    send(&p, "orders", "o-4", "k", "good").await;
    let seen = log();
    let decide = |d: &Delivery| {
        let bad = d.id == "o-3";
        async move {
            if bad {
                Outcome::Reject(Failure::new("no"))
            } else {
                Outcome::Ack
            }
        }
    };
    let mut sub = patient("orders", "g");
    sub.dead_letter = false;
    let c = b.consume(sub, Recorder::new("c", &seen, decide));
    let dead = log();
    let dlq = b.consume(patient("orders_dlq", "ops"), Recorder::acking("dlq", &dead));
    // o-4 comes after o-3 on its key: o-3 was settled for good before it.
    let all = wait_for_id(&seen, "o-4", HANG_GUARD).await;
    // A dead letter of o-3 would be on the dead-letter stream before this one, on its key.
    send(&p, "orders_dlq", "sentinel", "k", "").await;
    let letters = wait_for_id(&dead, "sentinel", HANG_GUARD).await;
    c.stop().await;
    dlq.stop().await;
    assert_eq!(
        of(&all, "o-3").len(),
        1,
        "the rejected message was not redelivered"
    );
    assert_eq!(
        letters.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["sentinel"],
        "nothing was dead-lettered"
    );
}

/// Postpone: redelivered after the delay, with the same attempt number; later messages of the
/// key wait behind it; other keys do not.
pub async fn postpone_holds_its_key<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "x-1", "x", "1").await;
    send(&p, "orders", "x-2", "x", "2").await;
    send(&p, "orders", "y-1", "y", "1").await;
    let seen = log();
    let first = Arc::new(Mutex::new(true));
    // The postponed message, back again, waits for y-1: were y-1 held up behind key x, the
    // check would fail at the hang guard instead of racing the delay.
    let log_of_y = seen.clone();
    let decide = move |d: &Delivery| {
        let x1 = d.id == "x-1";
        let postpone = x1 && std::mem::replace(&mut *first.lock().unwrap(), false);
        let log_of_y = log_of_y.clone();
        async move {
            if postpone {
                return Outcome::Postpone(Duration::from_millis(300));
            }
            if x1 {
                poll(HANG_GUARD, || {
                    log_of_y.lock().unwrap().iter().any(|s| s.id == "y-1")
                })
                .await;
            }
            Outcome::Ack
        }
    };
    let c = b.consume(patient("orders", "g"), Recorder::new("c", &seen, decide));
    let all = wait_for_id(&seen, "x-2", HANG_GUARD).await;
    c.stop().await;
    let order: Vec<(&str, u32)> = all.iter().map(|s| (s.id.as_str(), s.attempt)).collect();
    let pos = |id: &str, nth: usize| {
        order
            .iter()
            .enumerate()
            .filter(|(_, (i, _))| *i == id)
            .nth(nth)
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("no delivery {nth} of {id}: {order:?}"))
    };
    assert!(
        pos("y-1", 0) < pos("x-1", 1),
        "another key is not held up: {order:?}"
    );
    assert!(
        pos("x-1", 1) < pos("x-2", 0),
        "the key's next message waits: {order:?}"
    );
    let x1 = of(&all, "x-1");
    assert_eq!(
        (x1[0].attempt, x1[1].attempt),
        (1, 1),
        "postponing is not an attempt"
    );
    assert!(x1[1].started.duration_since(x1[0].ended) >= Duration::from_millis(280));
}

/// A worker that dies mid-handler: its delivery goes to another consumer after the visibility
/// timeout, as the next attempt.
pub async fn crashed_worker_is_redelivered<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-9", "k", "x").await;
    let hung = log();
    let started = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let mark = started.clone();
    let first = b.consume(
        quick("orders", "g"),
        Recorder::new("dying", &hung, move |_| {
            mark.lock().unwrap().push(Instant::now());
            std::future::pending::<Outcome>()
        }),
    );
    assert!(
        poll(HANG_GUARD, || !started.lock().unwrap().is_empty()).await,
        "the first consumer never got the message"
    );
    let taken_at = started.lock().unwrap()[0];
    first.crash();
    let seen = log();
    let second = b.consume(quick("orders", "g"), Recorder::acking("survivor", &seen));
    let got = wait_for(&seen, 1, HANG_GUARD).await;
    second.stop().await;
    assert_eq!(got[0].attempt, 2, "the lost delivery counts as an attempt");
    // A lower bound: it was not handed over before the visibility timeout (400 ms).
    assert!(got[0].started.duration_since(taken_at) >= Duration::from_millis(350));
}

/// Extending visibility keeps a slow delivery from being handed to another consumer.
pub async fn extend_prevents_redelivery<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-5", "k", "x").await;
    send(&p, "orders", "sentinel", "k", "").await;
    let mut sub = quick("orders", "g");
    sub.visibility_timeout = Duration::from_secs(1);
    let seen = log();
    let started = Arc::new(Mutex::new(false));
    let mark = started.clone();
    // Three visibility timeouts of work, extending ten times per timeout.
    let slow = move |d: &Delivery| {
        let d = d.clone();
        let rounds = if d.id == "o-5" { 30 } else { 0 };
        if rounds > 0 {
            *mark.lock().unwrap() = true;
        }
        async move {
            for _ in 0..rounds {
                tokio::time::sleep(Duration::from_millis(100)).await;
                d.extend_visibility(Duration::from_secs(1))
                    .await
                    .expect("extend");
            }
            Outcome::Ack
        }
    };
    let c1 = b.consume(sub.clone(), Recorder::new("slow", &seen, slow));
    assert!(
        poll(HANG_GUARD, || *started.lock().unwrap()).await,
        "the slow consumer never got the message"
    );
    let c2 = b.consume(sub, Recorder::acking("other", &seen));
    // Every delivery of o-5 comes before the sentinel, its key's next message.
    let all = wait_for_id(&seen, "sentinel", HANG_GUARD).await;
    c1.stop().await;
    c2.stop().await;
    let o5: Vec<(&str, u32)> = of(&all, "o-5")
        .iter()
        .map(|s| (s.consumer.as_str(), s.attempt))
        .collect();
    assert_eq!(o5, [("slow", 1)], "delivered once: {all:?}");
}

/// Messages a handler publishes with its ack go out once it acks, in the order it staged them,
/// and never for an attempt that nacked or rejected; a duplicate among them is dropped as any
/// duplicate is; a topic that is not registered is refused when staged. Topic `shipments` is
/// registered next to `orders` (on a cluster: another slot, so the backend may publish before
/// the ack instead of with it), and one message goes back on `orders` itself.
pub async fn published_with_the_ack_and_only_with_it<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "shipments", "s-0", "s", "zero").await;
    send(&p, "orders", "o-1", "k", "").await;
    send(&p, "orders", "o-2", "k", "").await;
    send(&p, "orders", "sentinel", "k", "").await;
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let note = refused.clone();
    let stage = move |d: &Delivery| {
        let (d, note) = (d.clone(), note.clone());
        async move {
            let message = |id: &str, pk: &str| OutgoingMessage {
                id: MessageId::new(id).unwrap(),
                partition_key: pk.to_owned(),
                payload: format!("for {id}").into_bytes(),
                metadata: Metadata::from([("by".to_owned(), d.id.clone())]),
            };
            let staged = match (d.id.as_str(), d.attempt) {
                ("o-1", 1) => vec![("shipments", message("s-1", "s"))],
                ("o-1", _) => vec![
                    ("shipments", message("s-0", "s")),
                    ("shipments", message("s-1", "s")),
                    ("shipments", message("s-2", "s")),
                    ("orders", message("echo", "e")),
                ],
                ("o-2", _) => vec![("shipments", message("s-3", "s"))],
                _ => Vec::new(),
            };
            for (topic, m) in staged {
                if let Err(e) = d.publish_on_ack(topic, m).await {
                    return Outcome::Reject(Failure::new(format!("staging failed: {e}")));
                }
            }
            if d.id == "o-1" && d.attempt == 2 {
                match d.publish_on_ack("nowhere", message("x", "s")).await {
                    Ok(()) => note.lock().unwrap().push("accepted".into()),
                    Err(e) => note.lock().unwrap().push(e.to_string()),
                }
            }
            match (d.id.as_str(), d.attempt) {
                ("o-1", 1) => Outcome::Nack(Failure::new("not yet")),
                ("o-2", _) => Outcome::Reject(Failure::new("no")),
                _ => Outcome::Ack,
            }
        }
    };
    let seen = log();
    let c = b.consume(patient("orders", "g"), Recorder::new("c", &seen, stage));
    let shipped = log();
    let s = b.consume(patient("shipments", "g"), Recorder::acking("s", &shipped));
    let orders = wait_until(&seen, "the sentinel and the echo", HANG_GUARD, |s| {
        !of(s, "sentinel").is_empty() && !of(s, "echo").is_empty()
    })
    .await;
    // Every shipment is on key `s`, published no later than o-2 was settled: one more on the
    // key, after them, makes the count final.
    send(&p, "shipments", "last", "s", "").await;
    let got = wait_for_id(&shipped, "last", HANG_GUARD).await;
    c.stop().await;
    s.stop().await;
    assert_eq!(
        got.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s-0", "s-1", "s-2", "last"],
        "the acked attempt's messages in order, the duplicate dropped, none of a nacked or \
         rejected attempt"
    );
    assert_eq!(got[0].payload, "zero", "the first s-0 stays");
    assert_eq!(got[1].payload, "for s-1");
    assert_eq!(got[1].metadata["by"], "o-1");
    assert_eq!(
        of(&orders, "o-1")
            .iter()
            .map(|s| s.attempt)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(of(&orders, "echo").len(), 1);
    let refused = refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].contains("nowhere"),
        "staging on an unregistered topic is refused, naming it: {refused:?}"
    );
}
