//! Runway, the merge service: it answers every `MergeRequest` with a `MergeResult`, landing the
//! batch's changes through a [`Merger`] ([`GitMerger`] on real repositories, [`FakeMerger`] for
//! tests). Reads `runway-merge` (land) and `merge-conflict-check` (dry run); writes
//! `merge-signal` and `merge-conflict-check-signal`.
//!
//! A conflict or an invalid request is an answer (FAILED, acknowledged); only an
//! infrastructure failure is an error (retried, then dead-lettered, and then answered by the
//! dead-letter reconciler in `stages::reconcile`).

pub mod config;
mod git;
mod landing;
mod merger;
pub mod uri;

use std::sync::Arc;

use keyway_runtime::redis::RedisBackend;
use keyway_runtime::stub::{Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{Delivery, MessageId, Metadata};

pub use git::Identity;
pub use landing::{GitMerger, GitQueue};
pub use merger::{
    fake_revision, FakeMerger, Merger, MergerError, Verdict, FAKE_CONFLICT, FAKE_ERROR,
};

use crate::runway::messagequeue::{MergeRequest, MergeResult, Outcome, StepOutput, StepResult};
use crate::topics;

/// How often a landing in progress extends its delivery's lease, and by how much.
const LEASE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
const LEASE_HOLD: std::time::Duration = std::time::Duration::from_secs(30);

/// The merger a Runway process runs with, as configured (`[runway]` in the config file).
#[derive(Debug, Clone)]
pub enum AnyMerger {
    /// Invented revisions, for tests and demos.
    Fake(FakeMerger),
    /// Real landings.
    Git(Arc<GitMerger>),
}

impl AnyMerger {
    /// The merger `config` asks for; for git, after checking that git is new enough.
    pub async fn from_config(config: config::MergerConfig) -> Result<AnyMerger, String> {
        Ok(match config {
            config::MergerConfig::Fake => AnyMerger::Fake(FakeMerger),
            config::MergerConfig::Git(queues) => {
                AnyMerger::Git(Arc::new(GitMerger::new(queues).await?))
            }
        })
    }
}

impl Merger for AnyMerger {
    async fn merge(&self, request: &MergeRequest, commit: bool) -> Result<Verdict, MergerError> {
        match self {
            AnyMerger::Fake(m) => m.merge(request, commit).await,
            AnyMerger::Git(m) => m.merge(request, commit).await,
        }
    }
}

/// The result answering `request` with `verdict`.
pub fn answer(request: &MergeRequest, verdict: &Verdict) -> MergeResult {
    let (outcome, reason) = match verdict {
        Verdict::Succeeded { .. } => (Outcome::Succeeded, String::new()),
        Verdict::Failed { reason, .. } => (Outcome::Failed, reason.clone()),
    };
    let steps = request
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| StepResult {
            step_id: step.step_id.clone(),
            outputs: match verdict {
                Verdict::Succeeded { outputs } => outputs
                    .get(i)
                    .into_iter()
                    .flatten()
                    .map(|id| StepOutput { id: id.clone() })
                    .collect(),
                Verdict::Failed { .. } => Vec::new(),
            },
            reason: match verdict {
                Verdict::Failed {
                    step: Some((at, why)),
                    ..
                } if *at == i => why.clone(),
                _ => String::new(),
            },
        })
        .collect();
    MergeResult {
        id: request.id.clone(),
        outcome: outcome as i32,
        reason,
        steps,
        queue_name: request.queue_name.clone(),
    }
}

/// Where Runway's answers go: `merge-signal` for a commit, `merge-conflict-check-signal` for a
/// dry run.
#[derive(Debug, Clone)]
pub struct Answers {
    signal: Producer<topics::MergeSignal, RedisBackend>,
    check_signal: Producer<topics::MergeConflictCheckSignal, RedisBackend>,
}

impl Answers {
    /// Producers on `backend`.
    pub fn new(backend: &RedisBackend) -> Self {
        Answers {
            signal: Producer::new(backend.clone()),
            check_signal: Producer::new(backend.clone()),
        }
    }

    /// Publish `result` with message id `id` on the partition key the request `d` came with,
    /// with `d`'s ack.
    pub async fn publish(
        &self,
        d: &Delivery,
        result: &MergeResult,
        id: MessageId,
        commit: bool,
    ) -> Result<(), HandlerError> {
        let pk = d.partition_key.as_str();
        if commit {
            self.signal
                .publish_on_ack(d, result, id, pk, Metadata::new())
                .await?;
        } else {
            self.check_signal
                .publish_on_ack(d, result, id, pk, Metadata::new())
                .await?;
        }
        Ok(())
    }
}

/// Answers `runway-merge` (commit) on `merge-signal` and `merge-conflict-check` (dry run) on
/// `merge-conflict-check-signal`: message id = the request id, partition key as received.
#[derive(Debug, Clone)]
pub struct Responder<M> {
    merger: M,
    answers: Answers,
}

impl<M: Merger> Responder<M> {
    /// A responder with `merger`, answering through `backend`.
    pub fn new(merger: M, backend: &RedisBackend) -> Self {
        Responder {
            merger,
            answers: Answers::new(backend),
        }
    }

    async fn respond(
        &self,
        request: MergeRequest,
        d: &Delivery,
        commit: bool,
    ) -> Result<Handled, HandlerError> {
        if request.id.is_empty() {
            return Err(HandlerError::permanent("merge request has no id"));
        }
        // A landing can take longer than the visibility timeout (a first fetch of a big
        // repository): keep the delivery ours while it runs, so no other Runway starts it too.
        let merging = self.merger.merge(&request, commit);
        tokio::pin!(merging);
        // The first beat one period from now: an interval's immediate first tick still waits
        // for the timer's next millisecond, on every request.
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + LEASE_HEARTBEAT,
            LEASE_HEARTBEAT,
        );
        let verdict = loop {
            tokio::select! {
                verdict = &mut merging => break verdict,
                _ = heartbeat.tick() => {
                    if let Err(e) = d.lease.extend(LEASE_HOLD).await {
                        tracing::warn!("cannot extend the lease of merge request {}: {e}", request.id);
                    }
                }
            }
        }
        .map_err(|e| HandlerError::retryable(e.0))?;
        let result = answer(&request, &verdict);
        let id = MessageId::new(request.id.clone())
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        self.answers.publish(d, &result, id, commit).await?;
        Ok(Handled::Ack)
    }
}

impl<M: Merger> TopicHandler<topics::RunwayMerge> for Responder<M> {
    async fn handle(&self, request: MergeRequest, d: &Delivery) -> Result<Handled, HandlerError> {
        self.respond(request, d, true).await
    }
}

impl<M: Merger> TopicHandler<topics::MergeConflictCheck> for Responder<M> {
    async fn handle(&self, request: MergeRequest, d: &Delivery) -> Result<Handled, HandlerError> {
        self.respond(request, d, false).await
    }
}
