//! Every stage test (`stages.rs`, included as a module) again on a Redis Cluster of 3 masters
//! and 3 replicas, shared by the tests, each under a key prefix of its own.

use std::sync::atomic::{AtomicU32, Ordering};

use keyway_runtime::redis::EmbeddedCluster;

#[path = "stages.rs"]
#[allow(dead_code)]
mod cases;

use cases::TestRedis;

pub(crate) const ON_CLUSTER: bool = true;

/// The shared cluster, and a key prefix no other test uses.
pub(crate) fn test_redis() -> TestRedis {
    static TESTS: AtomicU32 = AtomicU32::new(0);
    let cluster = EmbeddedCluster::shared().expect("a local Redis Cluster starts");
    TestRedis {
        url: cluster.url(),
        keep: Box::new(cluster),
        key_prefix: Some(format!("t{}", TESTS.fetch_add(1, Ordering::SeqCst))),
    }
}
