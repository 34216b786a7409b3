//! The semantic suite every queue backend must pass, written once against
//! [`BackendUnderTest`]. A backend's test file instantiates each check with a fresh backend
//! (see `tests/redis_semantics.rs`).
//!
//! Durations are short (tens to hundreds of milliseconds) and every wait is bounded, so a
//! failing backend fails the test instead of hanging it.

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

/// A handler that records every delivery and answers with a function of it.
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

/// Wait until `seen` holds `n` entries, or panic after `timeout`.
pub async fn wait_for(seen: &Arc<Mutex<Vec<Seen>>>, n: usize, timeout: Duration) -> Vec<Seen> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = seen.lock().unwrap().clone();
        if now.len() >= n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {n} deliveries, got {}: {:?}",
            now.len(),
            now.iter().map(|s| (&s.id, s.attempt)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let c = b.consume(quick("orders", "g"), Recorder::acking("c", &seen));
    wait_for(&seen, 1, Duration::from_secs(5)).await;
    assert_eq!(
        send(&p, "orders", "o-1", "k", "again").await,
        PublishReceipt::Duplicate
    );
    assert_eq!(
        send(&p, "orders", "o-1", "other-key", "new").await,
        PublishReceipt::Published
    );
    let all = wait_for(&seen, 2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop().await;
    let all_now = seen.lock().unwrap().clone();
    assert_eq!(
        all_now.len(),
        2,
        "the duplicate was never delivered: {all_now:?}"
    );
    assert_eq!(all[0].payload, "first");
    assert_eq!(all[1].payload, "new");
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
    let seen = log();
    let c = b.consume(quick("orders", "g"), Recorder::acking("c", &seen));
    wait_for(&seen, 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.stop().await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Several consumers of one group: each partition key one at a time, in publish order;
/// different keys in parallel.
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
    let slow = |_: &Delivery| async {
        tokio::time::sleep(Duration::from_millis(3)).await;
        Outcome::Ack
    };
    let consumers: Vec<_> = (0..3)
        .map(|i| {
            let mut sub = quick("orders", "g");
            sub.batch_size = 4;
            b.consume(sub, Recorder::new(&format!("c{i}"), &seen, slow))
        })
        .collect();
    let all = wait_for(&seen, keys.len() * per_key, Duration::from_secs(20)).await;
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
    let consumers_used: std::collections::BTreeSet<&str> =
        all.iter().map(|s| s.consumer.as_str()).collect();
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
    let c1 = b.consume(quick("orders", "billing"), Recorder::acking("1", &one));
    let c2 = b.consume(quick("orders", "shipping"), Recorder::acking("2", &two));
    let a = wait_for(&one, 10, Duration::from_secs(5)).await;
    let b2 = wait_for(&two, 10, Duration::from_secs(5)).await;
    c1.stop().await;
    c2.stop().await;
    let ids = |v: &[Seen]| {
        v.iter()
            .map(|s| s.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(ids(&a), ids(&b2));
    assert_eq!(ids(&a).len(), 10);
}

/// Nack: redelivered after the backoff, counted, dead-lettered at max attempts with the last
/// reason and the message as published.
pub async fn nack_backoff_then_dead_letter<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-1", "k", "payload-1").await;
    let seen = log();
    let failing = |d: &Delivery| {
        let attempt = d.attempt;
        async move { Outcome::Nack(Failure::new(format!("boom {attempt}"))) }
    };
    let c = b.consume(quick("orders", "g"), Recorder::new("c", &seen, failing));
    let dead = log();
    let dlq = b.consume(quick("orders_dlq", "ops"), Recorder::acking("dlq", &dead));
    let tries = wait_for(&seen, 3, Duration::from_secs(5)).await;
    let letters = wait_for(&dead, 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop().await;
    dlq.stop().await;
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "no attempt after the dead letter"
    );
    assert_eq!(
        tries.iter().map(|s| s.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
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

/// Reject: dead-lettered at once, with the failure's detail.
pub async fn reject_dead_letters_with_detail<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-2", "k", "bad").await;
    let seen = log();
    let rejecting = |_: &Delivery| async {
        Outcome::Reject(Failure::new("unknown queue").with_detail("kind", "validation"))
    };
    let c = b.consume(quick("orders", "g"), Recorder::new("c", &seen, rejecting));
    let dead = log();
    let dlq = b.consume(quick("orders_dlq", "ops"), Recorder::acking("dlq", &dead));
    let letters = wait_for(&dead, 1, Duration::from_secs(5)).await;
    c.stop().await;
    dlq.stop().await;
    assert_eq!(seen.lock().unwrap().len(), 1);
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
    let mut sub = quick("orders", "g");
    sub.dead_letter = false;
    let c = b.consume(sub, Recorder::new("c", &seen, decide));
    let dead = log();
    let dlq = b.consume(quick("orders_dlq", "ops"), Recorder::acking("dlq", &dead));
    wait_for(&seen, 2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop().await;
    dlq.stop().await;
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the rejected message was not redelivered"
    );
    assert!(dead.lock().unwrap().is_empty());
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
    let decide = move |d: &Delivery| {
        let postpone = d.id == "x-1" && std::mem::replace(&mut *first.lock().unwrap(), false);
        async move {
            if postpone {
                Outcome::Postpone(Duration::from_millis(300))
            } else {
                Outcome::Ack
            }
        }
    };
    let c = b.consume(quick("orders", "g"), Recorder::new("c", &seen, decide));
    let all = wait_for(&seen, 4, Duration::from_secs(5)).await;
    c.stop().await;
    let order: Vec<(&str, u32)> = all.iter().map(|s| (s.id.as_str(), s.attempt)).collect();
    let pos = |id: &str, nth: usize| {
        order
            .iter()
            .enumerate()
            .filter(|(_, (i, _))| *i == id)
            .nth(nth)
            .map(|(p, _)| p)
            .unwrap()
    };
    assert!(
        pos("y-1", 0) < pos("x-1", 1),
        "another key is not held up: {order:?}"
    );
    assert!(
        pos("x-1", 1) < pos("x-2", 0),
        "the key's next message waits: {order:?}"
    );
    let x1: Vec<&Seen> = all.iter().filter(|s| s.id == "x-1").collect();
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
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Outcome::Ack
            }
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first consumer never got the message"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let taken_at = started.lock().unwrap()[0];
    first.crash();
    let seen = log();
    let second = b.consume(quick("orders", "g"), Recorder::acking("survivor", &seen));
    let got = wait_for(&seen, 1, Duration::from_secs(5)).await;
    second.stop().await;
    assert_eq!(got[0].attempt, 2, "the lost delivery counts as an attempt");
    assert!(got[0].started.duration_since(taken_at) >= Duration::from_millis(350));
}

/// Extending visibility keeps a slow delivery from being handed to another consumer.
pub async fn extend_prevents_redelivery<B: BackendUnderTest>(b: &B) {
    let p = b.publisher();
    send(&p, "orders", "o-5", "k", "x").await;
    let seen = log();
    let started = Arc::new(Mutex::new(false));
    let mark = started.clone();
    // Three visibility timeouts of work, extending every 150 ms.
    let slow = move |d: &Delivery| {
        *mark.lock().unwrap() = true;
        let d = d.clone();
        async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                d.extend_visibility(Duration::from_millis(400))
                    .await
                    .expect("extend");
            }
            Outcome::Ack
        }
    };
    let c1 = b.consume(quick("orders", "g"), Recorder::new("slow", &seen, slow));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !*started.lock().unwrap() {
        assert!(
            Instant::now() < deadline,
            "the slow consumer never got the message"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c2 = b.consume(quick("orders", "g"), Recorder::acking("other", &seen));
    let got = wait_for(&seen, 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    c1.stop().await;
    c2.stop().await;
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "delivered once: {:?}",
        seen.lock().unwrap()
    );
    assert_eq!((got[0].consumer.as_str(), got[0].attempt), ("slow", 1));
}
