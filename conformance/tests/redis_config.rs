//! Configuration bounds on a real server: values out of range never reach Redis, whether they
//! come from a file or from code, and a delay a handler asks for cannot overflow the server's
//! arithmetic.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway_conformance::backend_suite::{log, patient, send, wait_for, Recorder, HANG_GUARD};
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown,
};
use keyway_runtime::transport::{Outcome, PublishReceipt};

fn start() -> EmbeddedRedis {
    EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts")
}

fn config(server: &EmbeddedRedis) -> Config {
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = server.url();
    config.redis.shutdown_deadline = HANG_GUARD;
    config
}

async fn command(b: &RedisBackend, cmd: &'static str, args: Vec<&str>) -> Value {
    b.client()
        .custom(
            CustomCommand::new_static(cmd, ClusterHash::Random, false),
            args.into_iter().map(Value::from).collect::<Vec<_>>(),
        )
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_ttl_out_of_range_is_refused_at_connect_not_at_every_publish() {
    let server = start();
    // From a file, it does not load.
    let text = format!(
        "[redis]\nurl = \"{}\"\ndedup_ttl = \"3000000000000h\"\n[topics]\norders = \"orders\"\n",
        server.url()
    );
    let e = Config::from_toml(&text, Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config key `redis.dedup_ttl`: 3000000000000h is out of range (1s..=365d)"
    );
    // From code, it does not connect.
    let mut c = config(&server);
    c.redis.dedup_ttl = Duration::from_secs(3_000_000_000_000 * 3600);
    let e = RedisBackend::connect(c).await.unwrap_err().to_string();
    assert!(
        e.starts_with("config key `redis.dedup_ttl`: ")
            && e.ends_with("is out of range (1s..=365d)"),
        "{e}"
    );
    // The longest allowed one works.
    let mut c = config(&server);
    c.redis.dedup_ttl = Duration::from_secs(365 * 86_400);
    let (b, _) = RedisBackend::connect(c).await.unwrap();
    assert_eq!(
        send(&b, "orders", "o-1", "k", "x").await,
        PublishReceipt::Published
    );
    assert_eq!(
        send(&b, "orders", "o-1", "k", "x").await,
        PublishReceipt::Duplicate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_out_of_range_is_refused_by_run() {
    let server = start();
    let (b, _) = RedisBackend::connect(config(&server)).await.unwrap();
    let mut sub = patient("orders", "g");
    sub.visibility_timeout = Duration::from_secs(i64::MAX as u64);
    let (_trigger, shutdown) = Shutdown::new();
    let result = tokio::time::timeout(
        HANG_GUARD,
        b.run(sub, Recorder::acking("c", &log()), shutdown),
    )
    .await
    .expect("run refuses at once");
    let e = result.unwrap_err().to_string();
    assert!(
        e.starts_with("subscription to \"orders\" as group \"g\": `visibility_timeout`: ")
            && e.ends_with("is out of range (10ms..=7d)"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postponement_beyond_a_year_waits_a_year_not_minus_one_millisecond() {
    let server = start();
    let (b, _) = RedisBackend::connect(config(&server)).await.unwrap();
    send(&b, "orders", "o-1", "k", "x").await;
    let seen = log();
    let (trigger, shutdown) = Shutdown::new();
    let backend = b.clone();
    let recorder = Recorder::new("c", &seen, |_| async { Outcome::Postpone(Duration::MAX) });
    let task = tokio::spawn(async move {
        backend
            .run(patient("orders", "g"), Arc::clone(&recorder), shutdown)
            .await
    });
    wait_for(&seen, 1, HANG_GUARD).await;
    // Stopping waits for the settle.
    trigger.trigger();
    tokio::time::timeout(HANG_GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let due = command(
        &b,
        "ZRANGE",
        vec!["kw:{orders}:g:orders:g:due", "0", "-1", "WITHSCORES"],
    )
    .await
    .into_array();
    assert_eq!(due.len(), 2, "{due:?}");
    let at: f64 = due[1].as_string().unwrap().parse().unwrap();
    let now = command(&b, "TIME", vec![]).await.into_array();
    let part = |i: usize| now[i].as_string().unwrap().parse::<f64>().unwrap();
    let now_ms = part(0) * 1000.0 + (part(1) / 1000.0).floor();
    let year_ms = 365.0 * 86_400_000.0;
    assert!(
        at > now_ms + year_ms - 60_000.0 && at <= now_ms + year_ms,
        "due at {at}, now {now_ms}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}
