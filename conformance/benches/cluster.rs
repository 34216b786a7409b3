//! Publish and consume-and-ack throughput of the Redis backend on one `redis-server` and on a
//! local Redis Cluster of 3 masters (each with a replica), in the same run, interleaved: each
//! round measures both, the standalone server first in odd rounds and the cluster first in
//! even ones, and the ratio is taken within the round. Also the commands and script calls per
//! message in each mode (from `INFO commandstats` on every master), which do not depend on the
//! machine.
//!
//! Everything runs on loopback on one machine: on 2 cores the cluster's three masters (and
//! their replicas, which replay every write) share the cores the client runs on, so the
//! figures say what the cluster costs, not how far it scales on machines of its own.
//!
//! Run: `cargo bench -p keyway-conformance --bench cluster`. `KEYWAY_BENCH_N` sets the message
//! count per measure (default 12000), `KEYWAY_BENCH_ROUNDS` the rounds (default 3).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyway_runtime::redis::{
    Config, EmbeddedCluster, EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown,
};
use keyway_runtime::transport::{
    Delivery, Handler, MessageId, Outcome, OutgoingMessage, Publisher, SubscriptionConfig,
};
use support::{run_concurrently, CONCURRENCY};

/// Topics per mode: two per master of a freshly created 3-master cluster (whose masters hold
/// slots 0–5460, 5461–10922 and 10923–16383), so the load reaches all three.
const TOPICS_PER_MASTER: usize = 2;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Topic names whose streams hash to each master's slot range in turn.
fn topics() -> Vec<String> {
    let ranges = [0..5461u16, 5461..10923, 10923..16384];
    let mut picked = Vec::new();
    for range in ranges {
        let mut n = 0;
        let mut i = 0;
        while n < TOPICS_PER_MASTER {
            let name = format!("bench-{i}");
            if range.contains(&fred::util::redis_keyslot(name.as_bytes())) {
                picked.push(name);
                n += 1;
            }
            i += 1;
        }
    }
    picked
}

fn message(tag: &str, i: usize, payload: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        id: MessageId::new(format!("{tag}-{i}")).unwrap(),
        partition_key: format!("k{}", i % 64),
        payload: payload.to_vec(),
        metadata: Default::default(),
    }
}

struct Acker(AtomicUsize);

impl Handler for Acker {
    async fn handle(&self, _: &Delivery) -> Outcome {
        self.0.fetch_add(1, Ordering::Relaxed);
        Outcome::Ack
    }
}

/// The servers of one mode: the ports of its masters, to read their statistics.
struct Mode {
    name: &'static str,
    backend: RedisBackend,
    masters: Vec<u16>,
}

/// Sum over the masters of `INFO commandstats`: command → calls.
fn commandstats(masters: &[u16]) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for port in masters {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "INFO", "commandstats"])
            .output()
            .expect("redis-cli runs");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            *total.entry(name.to_owned()).or_default() += calls;
        }
    }
    total
}

/// Commands and script calls per message between two snapshots, less the `INFO` calls that
/// took them.
fn per_message(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    masters: usize,
    n: usize,
) -> (f64, f64) {
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let all: u64 = after.keys().map(|k| delta(k)).sum::<u64>() - masters as u64;
    let scripts = delta("evalsha") + delta("eval");
    (all as f64 / n as f64, scripts as f64 / n as f64)
}

struct Figures {
    publish: f64,
    consume: f64,
    publish_commands: f64,
    publish_scripts: f64,
    consume_commands: f64,
    consume_scripts: f64,
}

async fn measure(mode: &Mode, topics: &[String], round: usize, n: usize) -> Figures {
    let body = vec![b'x'; 1024];
    let tag = format!("{}-{round}", mode.name);

    let before = commandstats(&mode.masters);
    let (b, t, topics_c, body_c) = (
        mode.backend.clone(),
        tag.clone(),
        topics.to_vec(),
        body.clone(),
    );
    let publish = run_concurrently(n, move |i| {
        let (b, t, body) = (b.clone(), t.clone(), body_c.clone());
        let topic = topics_c[i % topics_c.len()].clone();
        async move {
            b.publish(&topic, message(&format!("p-{t}"), i, &body))
                .await
                .unwrap();
        }
    })
    .await;
    let after = commandstats(&mode.masters);
    let (publish_commands, publish_scripts) = per_message(&before, &after, mode.masters.len(), n);

    // A backlog of n over the topics, consumed and acked by one subscription per topic.
    let (b, t, topics_c, body_c) = (mode.backend.clone(), tag.clone(), topics.to_vec(), body);
    run_concurrently(n, move |i| {
        let (b, t, body) = (b.clone(), t.clone(), body_c.clone());
        let topic = topics_c[i % topics_c.len()].clone();
        async move {
            b.publish(&topic, message(&format!("c-{t}"), i, &body))
                .await
                .unwrap();
        }
    })
    .await;
    let acker = Arc::new(Acker(AtomicUsize::new(0)));
    let (trigger, shutdown) = Shutdown::new();
    let before = commandstats(&mode.masters);
    let started = Instant::now();
    let mut consumers = Vec::new();
    for topic in topics {
        let mut sub = SubscriptionConfig::new(topic, format!("g-{round}"));
        sub.batch_size = 64;
        let (b, a, s) = (mode.backend.clone(), acker.clone(), shutdown.clone());
        consumers.push(tokio::spawn(async move { b.run(sub, a, s).await }));
    }
    while acker.0.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let consume = n as f64 / started.elapsed().as_secs_f64();
    trigger.trigger();
    for c in consumers {
        c.await.unwrap().unwrap();
    }
    let after = commandstats(&mode.masters);
    let (consume_commands, consume_scripts) = per_message(&before, &after, mode.masters.len(), n);
    Figures {
        publish,
        consume,
        publish_commands,
        publish_scripts,
        consume_commands,
        consume_scripts,
    }
}

fn flush(masters: &[u16]) {
    for port in masters {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "FLUSHALL"])
            .output()
            .expect("redis-cli runs");
    }
}

async fn connect(url: String, topics: &[String]) -> RedisBackend {
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(topics.iter().map(String::as_str)).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = url;
    config.redis.shutdown_deadline = Duration::from_secs(2);
    RedisBackend::connect(config).await.expect("connects").0
}

/// min, median, max.
fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[0], v[v.len() / 2], v[v.len() - 1]]
}

fn show(what: &str, v: Vec<f64>) {
    let [lo, mid, hi] = spread(v);
    println!("{what:<44} {lo:>10.2} {mid:>10.2} {hi:>10.2}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("KEYWAY_BENCH_N", 12_000);
    let rounds = env("KEYWAY_BENCH_ROUNDS", 3).max(1);
    let topics = topics();
    let options = EmbeddedOptions {
        append_only: false,
        ..Default::default()
    };
    let server = EmbeddedRedis::start(options.clone()).expect("redis-server starts");
    let cluster = EmbeddedCluster::start(3, 1, options).expect("a local Redis Cluster starts");
    let standalone = Mode {
        name: "standalone",
        backend: connect(server.url(), &topics).await,
        masters: vec![server.port()],
    };
    let clustered = Mode {
        name: "cluster",
        backend: connect(cluster.url(), &topics).await,
        masters: cluster.masters().unwrap(),
    };
    // Warm-up: scripts loaded, connections to every node open.
    for mode in [&standalone, &clustered] {
        measure(mode, &topics, 0, 600).await;
        flush(&mode.masters);
    }
    let mut figures: Vec<(Figures, Figures)> = Vec::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [&standalone, &clustered]
        } else {
            [&clustered, &standalone]
        };
        let mut got = Vec::new();
        for mode in order {
            got.push((mode.name, measure(mode, &topics, round, n).await));
            flush(&mode.masters);
        }
        let (mut s, mut c) = (None, None);
        for (name, f) in got {
            if name == "standalone" {
                s = Some(f);
            } else {
                c = Some(f);
            }
        }
        figures.push((s.unwrap(), c.unwrap()));
    }
    println!(
        "{n} messages of 1 KiB per measure over {} topics ({TOPICS_PER_MASTER} per master), {CONCURRENCY} publishers, {rounds} rounds",
        topics.len()
    );
    println!("{:<44} {:>10} {:>10} {:>10}", "", "min", "median", "max");
    let col = |f: &dyn Fn(&(Figures, Figures)) -> f64| figures.iter().map(f).collect::<Vec<_>>();
    show("publish msgs/s, standalone", col(&|(s, _)| s.publish));
    show("publish msgs/s, cluster", col(&|(_, c)| c.publish));
    show(
        "  ratio cluster/standalone",
        col(&|(s, c)| c.publish / s.publish),
    );
    show(
        "consume-and-ack msgs/s, standalone",
        col(&|(s, _)| s.consume),
    );
    show("consume-and-ack msgs/s, cluster", col(&|(_, c)| c.consume));
    show(
        "  ratio cluster/standalone",
        col(&|(s, c)| c.consume / s.consume),
    );
    show(
        "publish: commands/msg, standalone",
        col(&|(s, _)| s.publish_commands),
    );
    show(
        "publish: commands/msg, cluster",
        col(&|(_, c)| c.publish_commands),
    );
    show(
        "publish: script calls/msg, standalone",
        col(&|(s, _)| s.publish_scripts),
    );
    show(
        "publish: script calls/msg, cluster",
        col(&|(_, c)| c.publish_scripts),
    );
    show(
        "consume: commands/msg, standalone",
        col(&|(s, _)| s.consume_commands),
    );
    show(
        "consume: commands/msg, cluster",
        col(&|(_, c)| c.consume_commands),
    );
    show(
        "consume: script calls/msg, standalone",
        col(&|(s, _)| s.consume_scripts),
    );
    show(
        "consume: script calls/msg, cluster",
        col(&|(_, c)| c.consume_scripts),
    );
}
