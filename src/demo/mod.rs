//! The demo: the whole loop on real git repositories. It creates three bare repositories with
//! history and change branches (one of each strategy, a stack of two, one change already landed,
//! one that conflicts, one on a repository that is not there), submits batches through the
//! public submit API, runs every role with the git merger, and prints what landed.

mod repos;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyway_runtime::redis::{RedisBackend, Shutdown};

use crate::base::mergestrategy::Strategy;
use crate::merge_service::uri::ChangeUri;
use crate::merge_service::{AnyMerger, GitMerger, GitQueue, Identity};
use crate::orchestrator::{Batch, BatchState, LandStrategy, Request, RequestState};
use crate::stages::app::{self, Role};
use crate::stages::store::{is_terminal, Store};
use crate::stages::submit::{self, NewRequest};
use repos::DemoRepo;

/// One batch to submit, and why it is meant to fail, if it is.
struct Planned {
    queue: &'static str,
    requests: Vec<NewRequest>,
    note: String,
    fails: Option<&'static str>,
}

/// The demo's repositories and batches.
struct Scenario {
    repos: Vec<(&'static str, DemoRepo)>,
    batches: Vec<Planned>,
}

fn request(uris: Vec<String>, strategy: LandStrategy) -> NewRequest {
    NewRequest { uris, strategy }
}

/// Build the repositories under `root` and plan the batches.
fn build(root: &Path) -> Result<Scenario, String> {
    let payments = DemoRepo::create(
        root,
        "payments",
        &[
            ("README.md", "# payments\n"),
            (
                "src/ledger.txt",
                "balance = credits - debits\nround = none\n",
            ),
            ("src/fees.txt", "card = 2.9%\n"),
        ],
    )?;
    let rounding = payments.change(
        "ledger-rounding",
        "main",
        &[
            (
                "src/ledger.txt",
                "balance = credits - debits\nround = half-even\n",
                "Round balances half to even",
            ),
            (
                "tests/ledger.txt",
                "half-even: 2.5 -> 2\n",
                "Test the rounding",
            ),
        ],
    )?;
    let fees = payments.change(
        "fee-table",
        "main",
        &[
            ("src/fees.txt", "card = 2.9%\nwire = 0.5%\n", "Wire fees"),
            (
                "src/fees.txt",
                "card = 2.9%\nwire = 0.5%\nach = 0.8%\n",
                "ACH fees",
            ),
            ("docs/fees.md", "# Fees\n", "Document fees"),
        ],
    )?;
    let rewrite = payments.change(
        "ledger-rewrite",
        "main",
        &[(
            "src/ledger.txt",
            "balance = sum(entries)\nround = bankers\n",
            "Rewrite the ledger",
        )],
    )?;
    let audit = payments.change(
        "audit-log",
        "main",
        &[("src/audit.txt", "log every entry\n", "Add an audit log")],
    )?;
    let audit_sha = audit.rsplit('/').next().unwrap_or_default().to_owned();
    let retention = payments.change(
        "audit-retention",
        &audit_sha,
        &[(
            "src/audit.txt",
            "log every entry\nkeep 7 years\n",
            "Keep audit entries 7 years",
        )],
    )?;
    let landed = ChangeUri::file(&payments.bare, "refs/heads/main", &payments.rev("main~1")?);
    // Someone lands on main after the branches were cut: every change is behind the tip.
    payments.push_to_main(&[(
        "README.md",
        "# payments\n\nOwned by the ledger team.\n",
        "Name the owners",
    )])?;

    let search = DemoRepo::create(
        root,
        "search",
        &[("README.md", "# search\n"), ("src/query.txt", "terms\n")],
    )?;
    let parser = search.change(
        "query-parser",
        "main",
        &[
            ("src/query.txt", "terms\nphrases\n", "Parse phrases"),
            ("src/query.txt", "terms\nphrases\nfields\n", "Parse fields"),
        ],
    )?;
    search.push_to_main(&[("docs/search.md", "# Search\n", "Document search")])?;
    // A change on a fork that is gone by the time Runway looks for it.
    let fork = DemoRepo::create(
        root,
        "search-fork",
        &[("src/query.txt", "terms\nregexes\n")],
    )?;
    let unreachable = ChangeUri::file(&fork.bare, "refs/heads/main", &fork.rev("main")?);
    fork.remove()?;

    let infra = DemoRepo::create(root, "infra", &[("deploy.txt", "version = 1\n")])?;
    let release = infra.change(
        "release",
        "main",
        &[("deploy.txt", "version = 2\n", "Release version 2")],
    )?;

    let batches = vec![
        Planned {
            queue: "payments",
            requests: vec![
                request(vec![rounding], LandStrategy::Rebase),
                request(vec![fees], LandStrategy::SquashRebase),
            ],
            note: "rebase ledger-rounding (2 commits), squash-rebase fee-table (3 commits)".into(),
            fails: None,
        },
        Planned {
            queue: "payments",
            requests: vec![request(vec![rewrite], LandStrategy::Merge)],
            note: "merge ledger-rewrite".into(),
            fails: Some("ledger-rewrite changes the lines ledger-rounding changed"),
        },
        Planned {
            queue: "payments",
            requests: vec![
                request(vec![audit, retention], LandStrategy::Unset),
                request(vec![landed], LandStrategy::Rebase),
            ],
            note: "the stack audit-log + audit-retention (default: rebase), and a commit already on main".into(),
            fails: None,
        },
        Planned {
            queue: "search",
            requests: vec![request(vec![unreachable], LandStrategy::Rebase)],
            note: "rebase a change from search-fork.git".into(),
            fails: Some("search-fork.git is gone, so Runway's retries end in the dead-letter path"),
        },
        Planned {
            queue: "search",
            requests: vec![request(vec![parser], LandStrategy::Merge)],
            note: "merge query-parser (2 commits)".into(),
            fails: None,
        },
        Planned {
            queue: "infra",
            requests: vec![request(vec![release], LandStrategy::Promote)],
            note: "promote release".into(),
            fails: None,
        },
    ];
    Ok(Scenario {
        repos: vec![("payments", payments), ("search", search), ("infra", infra)],
        batches,
    })
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the demo on `backend`: build the repositories, submit, run every role with the git
/// merger, wait for every batch to settle, and print the tables, a summary and each target's
/// history. `Ok` when every batch ended as planned.
pub async fn run(backend: &RedisBackend, out: &mut impl std::io::Write) -> Result<(), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let root =
        Scratch(std::env::temp_dir().join(format!("keyway-demo-{}-{nanos}", std::process::id())));
    std::fs::create_dir_all(&root.0).map_err(|e| format!("{}: {e}", root.0.display()))?;
    let dir = root.0.clone();
    let scenario = tokio::task::spawn_blocking(move || build(&dir))
        .await
        .map_err(|e| format!("building the demo repositories: {e}"))??;
    let mut w = |line: String| {
        let _ = writeln!(out, "{line}");
    };
    w(format!(
        "created payments.git, search.git and infra.git in {}",
        root.0.display()
    ));

    let queues: HashMap<String, GitQueue> = scenario
        .repos
        .iter()
        .map(|(queue, repo)| {
            (
                (*queue).to_owned(),
                GitQueue {
                    repository: repo.bare.display().to_string(),
                    branch: "main".into(),
                    default_strategy: Strategy::Rebase,
                    mirror_dir: root.0.join("mirrors"),
                    max_landing_attempts: 10,
                    committer: Identity::default(),
                    stale_check: false,
                    change_sources: Vec::new(),
                },
            )
        })
        .collect();
    let merger = AnyMerger::Git(Arc::new(GitMerger::new(queues).await?));
    let store = Store::new(backend);
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(backend, &Role::ALL, &merger, &shutdown);

    let mut batches = Vec::new();
    for planned in &scenario.batches {
        let batch = submit::submit(backend, &store, planned.queue, &planned.requests)
            .await
            .map_err(|e| format!("submitting to {}: {e}", planned.queue))?;
        w(format!("submitted {:<18} {}", batch.id, planned.note));
        if let Some(why) = planned.fails {
            w(format!("  {} is seeded to fail: {why}", batch.id));
        }
        batches.push(batch);
    }
    w("waiting for the loop to settle".into());

    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let mut done = true;
        for b in &batches {
            let batch = store
                .batch(&b.id)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            done &= is_terminal(batch.state()) && members_settled(&store, &batch).await?;
        }
        if done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    trigger.trigger();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("a stage stopped with an error: {e}")),
            Err(e) => return Err(format!("a stage crashed: {e}")),
        }
    }

    let mut summary = Summary {
        batches: batches.len(),
        ..Summary::default()
    };
    w(format!("\n{:<18} {:<10} FAILURE", "BATCH", "STATE"));
    let mut rows = Vec::new();
    for (planned, b) in scenario.batches.iter().zip(&batches) {
        let batch = store
            .batch(&b.id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        w(format!(
            "{:<18} {:<10} {}",
            batch.id,
            state_name(batch.state()),
            batch.failure_reason
        ));
        let mut requests = Vec::new();
        for id in &batch.contains {
            let r = store.request(id).await.map_err(|e| e.to_string())?;
            requests.push(r.unwrap_or_else(|| Request {
                id: id.clone(),
                ..Request::default()
            }));
        }
        summary.count(
            planned.fails.is_some(),
            judge(planned.fails.is_some(), &batch, &requests),
        );
        rows.extend(requests);
    }
    w(format!(
        "\n{:<14} {:<8} LANDED REVISIONS / ERROR",
        "REQUEST", "STATE"
    ));
    for r in &rows {
        let detail = match (r.revisions.is_empty(), r.state()) {
            (false, _) => r
                .revisions
                .iter()
                .map(|s| &s[..s.len().min(12)])
                .collect::<Vec<_>>()
                .join(" "),
            (true, RequestState::Landed) => "(already on main: nothing new to land)".into(),
            (true, _) => r.error.clone(),
        };
        let state = r.state().as_str_name().trim_start_matches("REQUEST_STATE_");
        w(format!("{:<14} {:<8} {detail}", r.id, state));
    }
    for (queue, repo) in &scenario.repos {
        w(format!("\n{queue}.git main:"));
        let graph = tokio::task::block_in_place(|| repo.graph())?;
        for line in graph.lines() {
            w(format!("  {line}"));
        }
    }
    w(format!("\n{}", summary.line()));
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

async fn members_settled(store: &Store, batch: &Batch) -> Result<bool, String> {
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

/// How the batches ended, compared with how they were planned.
#[derive(Debug, Default)]
struct Summary {
    batches: usize,
    succeeded: usize,
    failed_as_seeded: usize,
    unexpected: Vec<String>,
}

impl Summary {
    fn count(&mut self, seeded_to_fail: bool, wrong: Vec<String>) {
        match (wrong.is_empty(), seeded_to_fail) {
            (true, false) => self.succeeded += 1,
            (true, true) => self.failed_as_seeded += 1,
            (false, _) => self.unexpected.push(wrong.join(", ")),
        }
    }

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
    fn outcomes_are_judged_against_the_plan() {
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
        assert_eq!(judge(true, &batch(BatchState::Succeeded), &landed).len(), 2);
        // A request still queued under a terminal batch is wrong either way.
        let queued = [request(RequestState::Queued)];
        assert_eq!(
            judge(false, &batch(BatchState::Succeeded), &queued).len(),
            1
        );
    }

    #[test]
    fn the_summary_is_one_line() {
        let mut s = Summary {
            batches: 3,
            ..Summary::default()
        };
        s.count(false, vec![]);
        s.count(true, vec![]);
        s.count(false, vec!["x".into()]);
        assert_eq!(
            s.line(),
            "3 batches: 1 succeeded, 1 failed as seeded; 1 unexpected"
        );
        assert_eq!(s.unexpected, ["x"]);
    }
}
