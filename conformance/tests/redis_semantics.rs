//! The backend suite (`keyway_conformance::backend_suite`) on Redis: each check on a fresh
//! `redis-server` of its own, and again on a Redis Cluster of 3 masters and 3 replicas (one
//! cluster shared by the checks, each under a key prefix of its own), with the topic in one
//! stream and spread over four buckets.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyway_conformance::backend_suite::{self, BackendUnderTest, ConsumerHandle};
use keyway_runtime::redis::{
    Config, EmbeddedCluster, EmbeddedOptions, EmbeddedRedis, RedisBackend, Registry, Shutdown,
};
use keyway_runtime::transport::{Handler, SubscriptionConfig};

/// What keeps the server of a check running.
enum Server {
    Standalone(Box<EmbeddedRedis>),
    Cluster(Arc<EmbeddedCluster>),
}

struct RedisUnderTest {
    backend: RedisBackend,
    _server: Server,
}

impl BackendUnderTest for RedisUnderTest {
    type Publisher = RedisBackend;

    fn publisher(&self) -> RedisBackend {
        self.backend.clone()
    }

    fn consume<H: Handler + 'static>(
        &self,
        sub: SubscriptionConfig,
        handler: Arc<H>,
    ) -> ConsumerHandle {
        let (trigger, shutdown) = Shutdown::new();
        let backend = self.backend.clone();
        let task = tokio::spawn(async move { backend.run(sub, handler, shutdown).await });
        let abort = task.abort_handle();
        ConsumerHandle::new(
            move || {
                Box::pin(async move {
                    trigger.trigger();
                    task.await.expect("consumer task").expect("consumer loop");
                })
            },
            move || abort.abort(),
        )
    }
}

async fn connect(server: Server) -> RedisUnderTest {
    connect_in_buckets(server, 1).await
}

/// As `connect`, with the suite's topic spread over `buckets` streams.
async fn connect_in_buckets(server: Server, buckets: u16) -> RedisUnderTest {
    static CHECKS: AtomicU32 = AtomicU32::new(0);
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders", "shipments"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.registry.set_buckets("orders", buckets).unwrap();
    match &server {
        Server::Standalone(server) => config.redis.url = server.url(),
        Server::Cluster(cluster) => {
            config.redis.url = cluster.url();
            config.redis.key_prefix = format!("check{}", CHECKS.fetch_add(1, Ordering::SeqCst));
        }
    }
    config.redis.shutdown_deadline = Duration::from_secs(2);
    let (backend, _) = RedisBackend::connect(config).await.expect("connects");
    RedisUnderTest {
        backend,
        _server: server,
    }
}

async fn redis() -> RedisUnderTest {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts");
    connect(Server::Standalone(Box::new(server))).await
}

async fn cluster() -> RedisUnderTest {
    let cluster = tokio::task::spawn_blocking(EmbeddedCluster::shared)
        .await
        .unwrap()
        .expect("a local Redis Cluster starts");
    connect(Server::Cluster(cluster)).await
}

/// The cluster, with the topic in 4 buckets (streams `orders#0` … `orders#3`, four slots).
async fn cluster_in_buckets() -> RedisUnderTest {
    let cluster = tokio::task::spawn_blocking(EmbeddedCluster::shared)
        .await
        .unwrap()
        .expect("a local Redis Cluster starts");
    connect_in_buckets(Server::Cluster(cluster), 4).await
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let backend = redis().await;
                backend_suite::$check(&backend).await;
            }
        )*
        mod on_cluster {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let backend = cluster().await;
                    backend_suite::$check(&backend).await;
                }
            )*
        }
        mod on_cluster_in_buckets {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let backend = cluster_in_buckets().await;
                    backend_suite::$check(&backend).await;
                }
            )*
        }
    };
}

suite!(
    dedup_outlives_consumption,
    concurrent_publishers_of_one_id,
    per_key_order_across_consumers,
    groups_are_independent,
    nack_backoff_then_dead_letter,
    reject_dead_letters_with_detail,
    reject_without_dead_letters_drops,
    postpone_holds_its_key,
    crashed_worker_is_redelivered,
    extend_prevents_redelivery,
    published_with_the_ack_and_only_with_it,
);
