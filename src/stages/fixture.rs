//! Seeded batches for the fake merger: six batches on three queues, some marked to conflict or
//! to fail, for tests of the whole loop (merge → Runway → mergesignal → conclude/speculate,
//! with the dead-letter reconcilers) that do not need git.

use keyway_runtime::redis::RedisBackend;

use super::store::Store;
use super::submit::hand_over;
use crate::merge_service::{FAKE_CONFLICT, FAKE_ERROR};
use crate::orchestrator::{Batch, BatchState, LandStrategy, Request, RequestState};

/// One seeded batch: its queue, number, and its requests' (number, strategy, marker).
struct Seed {
    queue: &'static str,
    batch: u32,
    requests: &'static [(u32, LandStrategy, Option<&'static str>)],
}

const SEEDS: &[Seed] = &[
    Seed {
        queue: "payments",
        batch: 1,
        requests: &[
            (1, LandStrategy::SquashRebase, None),
            (2, LandStrategy::Rebase, None),
        ],
    },
    Seed {
        queue: "payments",
        batch: 2,
        requests: &[(3, LandStrategy::Merge, Some(FAKE_CONFLICT))],
    },
    Seed {
        queue: "payments",
        batch: 3,
        requests: &[
            (4, LandStrategy::SquashRebase, None),
            (5, LandStrategy::Unset, None),
        ],
    },
    Seed {
        queue: "search",
        batch: 1,
        requests: &[(1, LandStrategy::Rebase, Some(FAKE_ERROR))],
    },
    Seed {
        queue: "search",
        batch: 2,
        requests: &[
            (2, LandStrategy::Rebase, None),
            (3, LandStrategy::Promote, None),
        ],
    },
    Seed {
        queue: "infra",
        batch: 1,
        requests: &[(1, LandStrategy::Promote, None)],
    },
];

fn uri(queue: &str, n: u32, marker: Option<&str>) -> String {
    let sha = crate::merge_service::fake_revision(&format!("{queue}/{n}"), &[]);
    let base = format!("git://git.example.com/{queue}/refs%2Fheads%2Ffeature-{n}/{sha}");
    match marker {
        Some(m) => format!("{base}?{m}"),
        None => base,
    }
}

/// Create the seeded requests and batches (batches ready to merge) and return the batch ids.
pub async fn seed(store: &Store) -> Result<Vec<Batch>, String> {
    let mut batches = Vec::new();
    for s in SEEDS {
        let mut requests: Vec<Request> = s
            .requests
            .iter()
            .map(|(n, strategy, marker)| Request {
                id: format!("{}/{n}", s.queue),
                queue: s.queue.to_owned(),
                uris: vec![uri(s.queue, *n, *marker)],
                strategy: *strategy as i32,
                state: RequestState::Queued as i32,
                ..Default::default()
            })
            .collect();
        let mut batch = Batch {
            id: format!("{}/batch/{}", s.queue, s.batch),
            queue: s.queue.to_owned(),
            contains: requests.iter().map(|r| r.id.clone()).collect(),
            state: BatchState::Merging as i32,
            ..Default::default()
        };
        store
            .create(&mut batch, &mut requests)
            .await
            .map_err(|e| format!("seeding {}: {e}", batch.id))?;
        batches.push(batch);
    }
    Ok(batches)
}

/// Hand each batch to the merge stage, in queue order (partition key = queue).
pub async fn submit(backend: &RedisBackend, batches: &[Batch]) -> Result<(), String> {
    for b in batches {
        hand_over(backend, b).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
