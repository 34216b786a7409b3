//! The demo: the whole loop (merge → Runway → mergesignal → conclude/speculate, with the
//! dead-letter reconcilers) on seeded queues, some batches marked to conflict or to fail.

use std::time::{Duration, Instant};

use keyway_runtime::redis::{RedisBackend, Shutdown};
use keyway_runtime::stub::Producer;
use keyway_runtime::transport::{MessageId, Metadata};

use super::app::{self, Role};
use crate::merge_service::{AnyMerger, FakeMerger, FAKE_CONFLICT, FAKE_ERROR};
use super::store::{is_terminal, Store};
use crate::orchestrator::topics as otopics;
use crate::orchestrator::{Batch, BatchRef, BatchState, LandStrategy, Request, RequestState};

/// One seeded batch: its queue, number, its requests' (number, strategy, marker), and why it
/// is meant to fail, if it is.
struct Seed {
    queue: &'static str,
    batch: u32,
    requests: &'static [(u32, LandStrategy, Option<&'static str>)],
    fails: Option<&'static str>,
}

const SEEDS: &[Seed] = &[
    Seed {
        queue: "payments",
        batch: 1,
        requests: &[
            (1, LandStrategy::SquashRebase, None),
            (2, LandStrategy::Rebase, None),
        ],
        fails: None,
    },
    Seed {
        queue: "payments",
        batch: 2,
        requests: &[(3, LandStrategy::Merge, Some(FAKE_CONFLICT))],
        fails: Some("its change conflicts"),
    },
    Seed {
        queue: "payments",
        batch: 3,
        requests: &[
            (4, LandStrategy::SquashRebase, None),
            (5, LandStrategy::Unset, None),
        ],
        fails: None,
    },
    Seed {
        queue: "search",
        batch: 1,
        requests: &[(1, LandStrategy::Rebase, Some(FAKE_ERROR))],
        fails: Some("its merge backend is unavailable"),
    },
    Seed {
        queue: "search",
        batch: 2,
        requests: &[
            (2, LandStrategy::Rebase, None),
            (3, LandStrategy::Promote, None),
        ],
        fails: None,
    },
    Seed {
        queue: "infra",
        batch: 1,
        requests: &[(1, LandStrategy::Promote, None)],
        fails: None,
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
    let producer = Producer::<otopics::SubmitqueueMerge, _>::new(backend.clone());
    for b in batches {
        let r = BatchRef {
            id: b.id.clone(),
            queue: b.queue.clone(),
        };
        let id = MessageId::intent(&b.id, &["merge"]).map_err(|e| e.to_string())?;
        producer
            .publish(&r, id, &b.queue, Metadata::new())
            .await
            .map_err(|e| format!("submitting {}: {e}", b.id))?;
    }
    Ok(())
}

/// Run the demo on `backend`: seed, run every role, wait for every batch and request to settle,
/// print the table. `Ok` when everything reached a terminal state.
pub async fn run(backend: &RedisBackend, out: &mut impl std::io::Write) -> Result<(), String> {
    let store = Store::new(backend.client().clone());
    let batches = seed(&store).await?;
    let w = |out: &mut dyn std::io::Write, line: String| {
        let _ = writeln!(out, "{line}");
    };
    w(
        out,
        format!(
            "seeded {} batches on queues payments, search, infra",
            batches.len()
        ),
    );
    for (seed, batch) in SEEDS.iter().zip(&batches) {
        if let Some(why) = seed.fails {
            w(
                out,
                format!("  {} is seeded to fail: {why}", batch.id),
            );
        }
    }
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(
        backend,
        &Role::ALL,
        &AnyMerger::Fake(FakeMerger),
        &shutdown,
    );
    submit(backend, &batches).await?;
    w(
        out,
        "submitted every batch to the merge stage; waiting for the loop to settle".into(),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reported = std::collections::BTreeSet::new();
    let settled = loop {
        let mut all_done = true;
        for b in &batches {
            let batch = store
                .batch(&b.id)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            if is_terminal(batch.state()) {
                let members_done = settled_members(&store, &batch).await?;
                if members_done && reported.insert(batch.id.clone()) {
                    let why = if batch.failure_reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", batch.failure_reason)
                    };
                    w(
                        out,
                        format!("  {:<20} {}{why}", batch.id, state_name(batch.state())),
                    );
                }
                all_done &= members_done;
            } else {
                all_done = false;
            }
        }
        if all_done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    trigger.trigger();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("a stage stopped with an error: {e}")),
            Err(e) => return Err(format!("a stage crashed: {e}")),
        }
    }
    table(&store, &batches, out).await?;
    let summary = summarize(&store, &batches).await?;
    w(out, format!("\n{}", summary.line()));
    if !settled {
        Err("not every batch settled within 60 s".into())
    } else if !summary.unexpected.is_empty() {
        Err(format!(
            "unexpected outcomes: {}",
            summary.unexpected.join("; ")
        ))
    } else {
        Ok(())
    }
}

/// How the batches ended, compared with how they were seeded.
#[derive(Debug, Default)]
struct Summary {
    batches: usize,
    succeeded: usize,
    failed_as_seeded: usize,
    unexpected: Vec<String>,
}

impl Summary {
    fn line(&self) -> String {
        format!(
            "{} batches: {} succeeded, {} failed as seeded; {} unexpected",
            self.batches,
            self.succeeded,
            self.failed_as_seeded,
            self.unexpected.len()
        )
    }
}

/// A batch is as expected when it succeeded with every request landed, or failed as seeded with
/// every request in error.
async fn summarize(store: &Store, batches: &[Batch]) -> Result<Summary, String> {
    let mut summary = Summary {
        batches: batches.len(),
        ..Summary::default()
    };
    for (seed, b) in SEEDS.iter().zip(batches) {
        let batch = store
            .batch(&b.id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let mut requests = Vec::new();
        for id in &b.contains {
            let r = store
                .request(id)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| Request {
                    id: id.clone(),
                    ..Request::default()
                });
            requests.push(r);
        }
        let wrong = judge(seed.fails.is_some(), &batch, &requests);
        match (wrong.is_empty(), seed.fails) {
            (true, None) => summary.succeeded += 1,
            (true, Some(_)) => summary.failed_as_seeded += 1,
            (false, _) => summary.unexpected.push(wrong.join(", ")),
        }
    }
    Ok(summary)
}

/// What is wrong with how `batch` and its `requests` ended, given whether it was seeded to fail:
/// a batch meant to succeed has every request landed, one meant to fail every request in error.
fn judge(seeded_to_fail: bool, batch: &Batch, requests: &[Request]) -> Vec<String> {
    let (want_batch, want_request) = if seeded_to_fail {
        (BatchState::Failed, RequestState::Error)
    } else {
        (BatchState::Succeeded, RequestState::Landed)
    };
    let mut wrong = Vec::new();
    if batch.state() != want_batch {
        wrong.push(format!(
            "{} is {}, expected {}",
            batch.id,
            state_name(batch.state()),
            state_name(want_batch)
        ));
    }
    for r in requests {
        if r.state() != want_request {
            wrong.push(format!(
                "request {} is {}, expected {}",
                r.id,
                r.state().as_str_name(),
                want_request.as_str_name()
            ));
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(state: BatchState) -> Batch {
        Batch {
            id: "q/batch/1".into(),
            state: state as i32,
            ..Batch::default()
        }
    }

    fn request(state: RequestState) -> Request {
        Request {
            id: "q/1".into(),
            state: state as i32,
            ..Request::default()
        }
    }

    #[test]
    fn outcomes_are_judged_against_the_seed() {
        let landed = [request(RequestState::Landed)];
        let errored = [request(RequestState::Error)];
        assert!(judge(false, &batch(BatchState::Succeeded), &landed).is_empty());
        assert!(judge(true, &batch(BatchState::Failed), &errored).is_empty());
        assert_eq!(
            judge(false, &batch(BatchState::Failed), &errored),
            [
                "q/batch/1 is FAILED, expected SUCCEEDED",
                "request q/1 is REQUEST_STATE_ERROR, expected REQUEST_STATE_LANDED"
            ]
        );
        // A batch that succeeded while seeded to fail is as wrong as the reverse.
        assert_eq!(
            judge(true, &batch(BatchState::Succeeded), &landed).len(),
            2
        );
        // A request still queued under a terminal batch is wrong either way.
        let queued = [request(RequestState::Queued)];
        assert_eq!(judge(false, &batch(BatchState::Succeeded), &queued).len(), 1);
    }

    #[test]
    fn the_summary_is_one_line() {
        let s = Summary {
            batches: 6,
            succeeded: 4,
            failed_as_seeded: 1,
            unexpected: vec!["x".into()],
        };
        assert_eq!(s.line(), "6 batches: 4 succeeded, 1 failed as seeded; 1 unexpected");
    }
}

async fn settled_members(store: &Store, batch: &Batch) -> Result<bool, String> {
    for id in &batch.contains {
        let r = store
            .request(id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        if r.state() == RequestState::Queued {
            return Ok(false);
        }
    }
    Ok(true)
}

fn state_name(s: BatchState) -> &'static str {
    s.as_str_name().trim_start_matches("BATCH_STATE_")
}

async fn table(
    store: &Store,
    batches: &[Batch],
    out: &mut impl std::io::Write,
) -> Result<(), String> {
    let _ = writeln!(out, "\n{:<20} {:<10} FAILURE", "BATCH", "STATE");
    for b in batches {
        let batch = store
            .batch(&b.id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<20} {:<10} {}",
            batch.id,
            state_name(batch.state()),
            batch.failure_reason
        );
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<10} LANDED REVISIONS / ERROR",
        "REQUEST", "STATE"
    );
    for b in batches {
        for id in &b.contains {
            let r = store
                .request(id)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let detail = if r.revisions.is_empty() {
                r.error.clone()
            } else {
                r.revisions.join(" ")
            };
            let state = r.state().as_str_name().trim_start_matches("REQUEST_STATE_");
            let _ = writeln!(out, "{:<14} {:<10} {}", r.id, state, detail);
        }
    }
    let mut wakeups = Vec::new();
    for q in ["payments", "search", "infra"] {
        let n = store
            .speculations(q)
            .await
            .map_err(|e| e.to_string())?
            .len();
        wakeups.push(format!("{q} {n}"));
    }
    let _ = writeln!(
        out,
        "\nspeculate wake-ups per queue: {}",
        wakeups.join(", ")
    );
    Ok(())
}
