//! Throughput and latency of the Redis backend, against `redis-benchmark` doing raw `XADD` on
//! the same server in the same run. Starts its own `redis-server` (no AOF, so the figures are
//! about the protocol and scripts, not the disk).
//!
//! The measures are repeated in rounds; each round starts from an empty server (`FLUSHALL`)
//! and runs `redis-benchmark` too, before the client's measures in odd rounds and after them
//! in even ones, and each ratio is taken to the baseline of its own round. The report gives
//! min, median and max over the rounds, of the figures and of the ratios.
//!
//! Run: `cargo bench -p keyway-conformance --bench redis`. `KEYWAY_BENCH_N` sets the message
//! count per measure (default 20000), `KEYWAY_BENCH_RATE` the offered load of the latency run
//! (default 2000 msgs/s for 2 s), `KEYWAY_BENCH_ROUNDS` the rounds (default 5).

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown,
};
use keyway_runtime::transport::{
    Delivery, Handler, MessageId, Outcome, OutgoingMessage, Publisher, SubscriptionConfig,
};
use support::{run_concurrently, CONCURRENCY};

/// How long the latency run offers its load, per round.
const LATENCY_WINDOW: Duration = Duration::from_secs(2);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `redis-benchmark` raw XADD, 50 clients, no pipelining: requests per second and p50 latency
/// (ms).
fn redis_benchmark(port: u16, n: usize, payload: &str) -> (f64, f64) {
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "-n",
            &n.to_string(),
            "-c",
            &CONCURRENCY.to_string(),
        ])
        .args(["XADD", "bench-raw", "*", "payload", payload])
        .output()
        .expect("redis-benchmark runs (Debian package redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "XADD bench-raw * payload ...: 51234.57 requests per second, p50=0.5 msec"
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("requests per second"))
        .unwrap_or_else(|| panic!("cannot read redis-benchmark output: {text}"));
    let rate = line
        .rsplit(": ")
        .find_map(|part| part.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the rate in: {line}"));
    let p50 = line
        .split("p50=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read p50 in: {line}"));
    (rate, p50)
}

/// Message `i` of round `round` (ids differ between rounds, so publish dedup never drops one).
fn message(round: usize, i: usize, payload: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        id: MessageId::new(format!("m-{round}-{i}")).unwrap(),
        partition_key: format!("k{}", i % 64),
        payload: payload.to_vec(),
        metadata: [("sent_us".to_owned(), now_us().to_string())].into(),
    }
}

struct Counter {
    done: AtomicUsize,
    latencies: Mutex<Vec<u64>>,
}

impl Handler for Counter {
    async fn handle(&self, d: &Delivery) -> Outcome {
        if let Some(sent) = d
            .metadata
            .get("sent_us")
            .and_then(|v| v.parse::<u64>().ok())
        {
            self.latencies
                .lock()
                .unwrap()
                .push(now_us().saturating_sub(sent));
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        Outcome::Ack
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One round's figures: rates in msgs/s, latencies in ms.
struct Round {
    baseline: f64,
    base_ms: f64,
    raw: f64,
    publish: f64,
    consume: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(backend: &RedisBackend, round: usize, n: usize, rate: usize) -> Round {
    let payload = "x".repeat(1024);
    let b = backend.clone();
    let body = payload.clone().into_bytes();
    let publish = run_concurrently(n, move |i| {
        let (b, body) = (b.clone(), body.clone());
        async move {
            b.publish("bench", message(round, i, &body)).await.unwrap();
        }
    })
    .await;

    let client = backend.client().clone();
    let body = payload.clone();
    let raw = run_concurrently(n, move |_| {
        let (client, body) = (client.clone(), body.clone());
        async move {
            let _: Value = client
                .custom::<Value, Value>(
                    CustomCommand::new_static("XADD", ClusterHash::FirstKey, false),
                    vec![
                        "bench-raw-fred".into(),
                        "*".into(),
                        "payload".into(),
                        body.into(),
                    ],
                )
                .await
                .unwrap();
        }
    })
    .await;

    // Consume and ack a backlog of n messages.
    let body = payload.clone().into_bytes();
    for i in 0..n {
        backend
            .publish("consume", message(round, i, &body))
            .await
            .unwrap();
    }
    let counter = Arc::new(Counter {
        done: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::new()),
    });
    let (trigger, shutdown) = Shutdown::new();
    let mut sub = SubscriptionConfig::new("consume", "bench");
    sub.batch_size = 64;
    let b = backend.clone();
    let c = counter.clone();
    let started = Instant::now();
    let consumer = tokio::spawn(async move { b.run(sub, c, shutdown).await });
    while counter.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consume = n as f64 / started.elapsed().as_secs_f64();
    trigger.trigger();
    consumer.await.unwrap().unwrap();

    // Latency at a fixed offered load.
    let counter = Arc::new(Counter {
        done: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::new()),
    });
    let (trigger, shutdown) = Shutdown::new();
    let mut sub = SubscriptionConfig::new("latency", "bench");
    sub.batch_size = 64;
    let b = backend.clone();
    let c = counter.clone();
    let consumer = tokio::spawn(async move { b.run(sub, c, shutdown).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = (rate as f64 * LATENCY_WINDOW.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let body = payload.into_bytes();
    for i in 0..total {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let b = backend.clone();
        let m = message(round, i, &body);
        tokio::spawn(async move { b.publish("latency", m).await.unwrap() });
    }
    while counter.done.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    trigger.trigger();
    consumer.await.unwrap().unwrap();
    let mut lat = counter.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Round {
        baseline: 0.0,
        base_ms: 0.0,
        raw,
        publish,
        consume,
        p50_ms: ms(percentile(&lat, 0.50)),
        p99_ms: ms(percentile(&lat, 0.99)),
    }
}

/// min, median, max.
fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[0], v[v.len() / 2], v[v.len() - 1]]
}

/// A row: the figure of each round and its ratio to that round's baseline.
fn row(
    name: &str,
    unit: &str,
    rounds: &[Round],
    figure: fn(&Round) -> f64,
    base: fn(&Round) -> f64,
) {
    let [lo, mid, hi] = spread(rounds.iter().map(figure).collect());
    let [rlo, rmid, rhi] = spread(rounds.iter().map(|r| figure(r) / base(r)).collect());
    println!(
        "{name:<44} {unit:<6} {lo:>9.2} {mid:>9.2} {hi:>9.2}   {rlo:>8.2} {rmid:>8.2} {rhi:>8.2}"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("KEYWAY_BENCH_N", 20_000);
    let rate = env("KEYWAY_BENCH_RATE", 2000).max(1);
    let rounds = env("KEYWAY_BENCH_ROUNDS", 5).max(1);
    println!(
        "load at start (/proc/loadavg): {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let payload = "x".repeat(1024);
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts");
    let config = Config {
        redis: keyway_runtime::redis::RedisConfig {
            url: server.url(),
            ..Default::default()
        },
        registry: Registry::identity(["bench", "consume", "latency"]).unwrap(),
        subscriptions: Default::default(),
    };
    let (backend, _) = RedisBackend::connect(config).await.unwrap();

    let mut results = Vec::new();
    for round in 0..rounds {
        let _: Value = backend
            .client()
            .custom::<Value, Value>(
                CustomCommand::new_static("FLUSHALL", ClusterHash::Random, false),
                vec![],
            )
            .await
            .unwrap();
        let baseline_first = round % 2 == 0;
        let mut base = (0.0, 0.0);
        if baseline_first {
            base = redis_benchmark(server.port(), n, &payload);
        }
        let mut r = measure(&backend, round, n, rate).await;
        if !baseline_first {
            base = redis_benchmark(server.port(), n, &payload);
        }
        (r.baseline, r.base_ms) = base;
        results.push(r);
    }

    println!(
        "\nmessages: {n} of 1 KiB per measure; {CONCURRENCY} concurrent publishers; redis-server \
         without AOF; {rounds} rounds, the baseline in each\n"
    );
    println!(
        "{:<44} {:<6} {:>9} {:>9} {:>9}   {:>8} {:>8} {:>8}",
        "measure", "unit", "min", "median", "max", "÷ min", "÷ median", "÷ max"
    );
    let rate_of = |r: &Round| r.baseline;
    let ms_of = |r: &Round| r.base_ms;
    row(
        "redis-benchmark XADD (baseline)",
        "msgs/s",
        &results,
        |r| r.baseline,
        rate_of,
    );
    row(
        "raw XADD through fred",
        "msgs/s",
        &results,
        |r| r.raw,
        rate_of,
    );
    row(
        "publish through the dedup script",
        "msgs/s",
        &results,
        |r| r.publish,
        rate_of,
    );
    row(
        "consume and ack",
        "msgs/s",
        &results,
        |r| r.consume,
        rate_of,
    );
    row(
        "redis-benchmark XADD p50 latency (baseline)",
        "ms",
        &results,
        |r| r.base_ms,
        ms_of,
    );
    row(
        &format!("publish→handler p50 at {rate} msgs/s"),
        "ms",
        &results,
        |r| r.p50_ms,
        ms_of,
    );
    row(
        &format!("publish→handler p99 at {rate} msgs/s"),
        "ms",
        &results,
        |r| r.p99_ms,
        ms_of,
    );
    println!(
        "\nload at end (/proc/loadavg): {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
