//! When an idle consume loop claims: it sleeps until what it knows is due, so work another
//! consumer hands over must wake it. Here a consumer that stops releases its delivery, and a
//! consumer of the same group that has been idle for a while takes it over well before its own
//! next claim (every five seconds for a visibility timeout of an hour).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyway_conformance::backend_suite::{log, patient, poll, send, wait_for, Recorder, HANG_GUARD};
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown,
};
use keyway_runtime::transport::{Delivery, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_consumer_wakes_an_idle_one_to_take_over_at_once() {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts");
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = server.url();
    config.redis.shutdown_deadline = Duration::from_millis(100);
    let (b, _) = RedisBackend::connect(config).await.expect("connects");

    // The first consumer takes the message and never finishes it.
    let started = Arc::new(Mutex::new(0));
    let mark = started.clone();
    let first_seen = log();
    let endless = Recorder::new("first", &first_seen, move |_: &Delivery| {
        *mark.lock().unwrap() += 1;
        async {
            std::future::pending::<()>().await;
            Outcome::Ack
        }
    });
    let (stop_first, shutdown) = Shutdown::new();
    let backend = b.clone();
    let first =
        tokio::spawn(async move { backend.run(patient("orders", "g"), endless, shutdown).await });
    send(&b, "orders", "handed-over", "a", "x").await;
    assert!(
        poll(HANG_GUARD, || *started.lock().unwrap() == 1).await,
        "the first consumer takes the message"
    );

    // The second has claimed, found nothing, and gone to sleep.
    let next = log();
    let (stop_second, shutdown) = Shutdown::new();
    let backend = b.clone();
    let acking = Recorder::acking("second", &next);
    let second =
        tokio::spawn(async move { backend.run(patient("orders", "g"), acking, shutdown).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(next.lock().unwrap().is_empty());

    let stopped_at = Instant::now();
    stop_first.trigger();
    first.await.unwrap().unwrap();
    let got = wait_for(&next, 1, HANG_GUARD).await;
    let waited = stopped_at.elapsed();
    assert_eq!((got[0].id.as_str(), got[0].attempt), ("handed-over", 1));
    // Its own next claim was about five seconds after it started.
    assert!(
        waited < Duration::from_secs(3),
        "the released delivery waited {waited:?} for the idle consumer"
    );
    stop_second.trigger();
    second.await.unwrap().unwrap();
}
