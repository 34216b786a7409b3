//! The orchestrator's stages around the merge service: `merge` hands a batch to Runway,
//! `mergesignal` takes the answer back; `conclude` and `speculate` are the minimal next stages
//! the fan-out wakes.
//!
//! What they write that echoes their input is bounded:
//! - an error a stage returns (the backend keeps it as the dead letter's `dlq.last_error`) and
//!   every reason it writes (a batch's `failure_reason`, a request's `error`, a log event's
//!   detail, the `failure_reason` metadata of `conclude`) is cut to
//!   [`MAX_REASON`](super::store::MAX_REASON) bytes;
//! - an identifier quoted in a reason is cut to [`MAX_ECHO`](super::store::MAX_ECHO) bytes;
//! - no reason quotes a payload.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use keyway_runtime::redis::RedisBackend;
use keyway_runtime::stub::{Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{Delivery, MessageId, Metadata};

use super::store::{bounded, echo, is_halted, is_terminal, reason, Store};
use crate::base::change::Change;
use crate::base::mergestrategy::Strategy;
use crate::orchestrator::topics as otopics;
use crate::orchestrator::{
    Batch, BatchRef, BatchState, LandStrategy, LogEvent, Request, RequestState,
};
use crate::runway::messagequeue::{MergeRequest, MergeResult, MergeStep, Outcome};
use crate::topics as rtopics;

/// Run `futures` together and collect their outputs in order, or return the first error (the
/// others are dropped). Their commands go out on the one connection without waiting for each
/// other's replies, so independent reads and writes cost one round trip instead of one each.
/// Only for work whose order does not matter.
async fn all<T, F>(futures: Vec<F>) -> Result<Vec<T>, HandlerError>
where
    F: Future<Output = Result<T, HandlerError>>,
{
    let mut running: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<T>> = running.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in running.iter_mut().zip(done.iter_mut()) {
            if out.is_some() {
                continue;
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(Ok(value)) => *out = Some(value),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(done.into_iter().flatten().collect())
}

fn id(text: &str) -> Result<MessageId, HandlerError> {
    MessageId::new(text).map_err(|e| HandlerError::permanent(reason(&e.to_string())))
}

fn intent(entity: &str, causes: &[&str]) -> Result<MessageId, HandlerError> {
    MessageId::intent(entity, causes).map_err(|e| HandlerError::permanent(reason(&e.to_string())))
}

/// Producers every stage shares.
#[derive(Clone, Debug)]
pub struct Outbox {
    log: Producer<otopics::Log, RedisBackend>,
    runway_merge: Producer<rtopics::RunwayMerge, RedisBackend>,
    conclude: Producer<otopics::Conclude, RedisBackend>,
    speculate: Producer<otopics::Speculate, RedisBackend>,
}

impl Outbox {
    /// Producers on `backend`.
    pub fn new(backend: &RedisBackend) -> Self {
        Outbox {
            log: Producer::new(backend.clone()),
            runway_merge: Producer::new(backend.clone()),
            conclude: Producer::new(backend.clone()),
            speculate: Producer::new(backend.clone()),
        }
    }

    /// Publish a log event about `request` with `d`'s ack, with id
    /// `<request>/<event>[/<batch>]` (`detail` cut to [`MAX_REASON`](super::store::MAX_REASON)).
    pub async fn log(
        &self,
        d: &Delivery,
        request: &str,
        event: &str,
        batch: &str,
        detail: &str,
    ) -> Result<(), HandlerError> {
        let message_id = if event == "landing" {
            intent(request, &[event, batch])?
        } else {
            intent(request, &[event])?
        };
        let e = LogEvent {
            request_id: request.to_owned(),
            event: event.to_owned(),
            batch_id: batch.to_owned(),
            detail: reason(detail).into_owned(),
        };
        self.log
            .publish_on_ack(d, &e, message_id, request, Metadata::new())
            .await?;
        Ok(())
    }

    /// The mergesignal fan-out, with `d`'s ack: `conclude` (id `<batch>/conclude/merged`, with
    /// the failure reason, cut, in metadata when there is one), then `speculate` (id
    /// `<batch>/merged`).
    pub async fn fan_out(
        &self,
        d: &Delivery,
        batch: &Batch,
        failure_reason: &str,
    ) -> Result<(), HandlerError> {
        let r = BatchRef {
            id: batch.id.clone(),
            queue: batch.queue.clone(),
        };
        let mut metadata = Metadata::new();
        if !failure_reason.is_empty() {
            metadata.insert("failure_reason".into(), reason(failure_reason).into_owned());
        }
        // Conclude first: speculate never hears of a batch whose conclusion is not out.
        self.conclude
            .publish_on_ack(
                d,
                &r,
                intent(&batch.id, &["conclude", "merged"])?,
                &batch.queue,
                metadata,
            )
            .await?;
        self.speculate
            .publish_on_ack(
                d,
                &r,
                intent(&batch.id, &["merged"])?,
                &batch.queue,
                Metadata::new(),
            )
            .await?;
        Ok(())
    }
}

/// Map a request's land strategy to Runway's.
pub fn strategy(s: LandStrategy) -> Strategy {
    match s {
        LandStrategy::Rebase => Strategy::Rebase,
        LandStrategy::SquashRebase => Strategy::SquashRebase,
        LandStrategy::Merge => Strategy::Merge,
        LandStrategy::Promote => Strategy::Promote,
        LandStrategy::Unset => Strategy::Default,
    }
}

/// The `merge` stage: a batch ready to land becomes a `MergeRequest` on `runway-merge`.
#[derive(Debug, Clone)]
pub struct MergeStage {
    /// State.
    pub store: Store,
    /// Producers.
    pub outbox: Outbox,
}

impl TopicHandler<otopics::SubmitqueueMerge> for MergeStage {
    async fn handle(&self, r: BatchRef, d: &Delivery) -> Result<Handled, HandlerError> {
        self.merge(r, d).await.map_err(bounded)
    }
}

impl MergeStage {
    /// An error naming `queue` when it is not registered.
    async fn known_queue(&self, queue: &str) -> Result<(), HandlerError> {
        if self.store.queue_exists(queue).await? {
            return Ok(());
        }
        Err(HandlerError::permanent(format!(
            "unknown queue {:?}",
            echo(queue)
        )))
    }

    async fn merge(&self, r: BatchRef, d: &Delivery) -> Result<Handled, HandlerError> {
        // A batch is created in a registered queue, so the queue is looked up only to say
        // why a batch is missing or named with another queue.
        let Some(batch) = self.store.batch(&r.id).await? else {
            self.known_queue(&r.queue).await?;
            return Err(HandlerError::permanent(format!(
                "batch {:?} does not exist",
                echo(&r.id)
            )));
        };
        if batch.queue != r.queue {
            self.known_queue(&r.queue).await?;
            return Err(HandlerError::permanent(format!(
                "batch {:?} belongs to queue {:?}, not {:?}",
                echo(&r.id),
                echo(&batch.queue),
                echo(&r.queue)
            )));
        }
        if is_halted(batch.state()) {
            return Ok(Handled::Ack);
        }
        let batch_id = batch.id.as_str();
        let reads = batch.contains.iter().map(|id| async move {
            let request = self.store.request(id).await?;
            request.ok_or_else(|| {
                HandlerError::permanent(format!(
                    "request {:?} of batch {:?} does not exist",
                    echo(id),
                    echo(batch_id)
                ))
            })
        });
        let steps: Vec<MergeStep> = all(reads.collect())
            .await?
            .into_iter()
            .map(|request| MergeStep {
                step_id: request.id.clone(),
                change: Some(Change {
                    uris: request.uris.clone(),
                }),
                strategy: strategy(request.strategy()) as i32,
            })
            .collect();
        // Log first: a failed log publish means Runway never hears of the batch. The events go
        // out in the members' order.
        for request_id in &batch.contains {
            self.outbox
                .log(d, request_id, "landing", &batch.id, "")
                .await?;
        }
        let request = MergeRequest {
            id: batch.id.clone(),
            queue_name: batch.queue.clone(),
            steps,
        };
        self.outbox
            .runway_merge
            .publish_on_ack(d, &request, id(&batch.id)?, &batch.queue, Metadata::new())
            .await?;
        Ok(Handled::Ack)
    }
}

/// The failure reason of a result: empty on success, otherwise its reason (cut to
/// [`MAX_REASON`](super::store::MAX_REASON)) or "merge failed" (an unspecified outcome counts
/// as a failure).
pub fn failure_reason(result: &MergeResult) -> String {
    match result.outcome() {
        Outcome::Succeeded => String::new(),
        _ if result.reason.is_empty() => "merge failed".to_owned(),
        _ => reason(&result.reason).into_owned(),
    }
}

/// The `mergesignal` stage: correlates Runway's answer and drives the batch to a terminal
/// state, then wakes `conclude` and `speculate`.
#[derive(Debug, Clone)]
pub struct MergeSignalStage {
    /// State.
    pub store: Store,
    /// Producers.
    pub outbox: Outbox,
}

impl TopicHandler<rtopics::MergeSignal> for MergeSignalStage {
    async fn handle(&self, result: MergeResult, d: &Delivery) -> Result<Handled, HandlerError> {
        self.signal(result, d).await.map_err(bounded)
    }
}

impl MergeSignalStage {
    /// Apply `result` to its batch, publishing with `d`'s ack (the stage's handler; the
    /// reconciler applies a dead-lettered success with it too).
    pub(crate) async fn signal(
        &self,
        result: MergeResult,
        d: &Delivery,
    ) -> Result<Handled, HandlerError> {
        if result.queue_name.is_empty() {
            return Err(HandlerError::permanent("merge result has no queue_name"));
        }
        let Some(mut batch) = self.store.batch(&result.id).await? else {
            return Err(HandlerError::permanent(format!(
                "batch {:?} does not exist",
                echo(&result.id)
            )));
        };
        if batch.state() == BatchState::Cancelling {
            return Ok(Handled::Ack);
        }
        let failure = failure_reason(&result);
        // Only the batch's own requests: a result cannot write revisions onto others.
        let mut revisions: Vec<(&str, Vec<String>)> = Vec::new();
        for step in result
            .steps
            .iter()
            .filter(|s| batch.contains.contains(&s.step_id))
        {
            let outputs: Vec<String> = step.outputs.iter().map(|o| o.id.clone()).collect();
            if !outputs.is_empty() {
                tracing::info!(request = %step.step_id, revisions = ?outputs, "landed");
                revisions.push((&step.step_id, outputs));
            }
        }
        if !revisions.is_empty() {
            self.store.set_revisions(&revisions).await?;
        }
        if is_terminal(batch.state()) {
            self.store.repair_batch_membership(&batch).await?;
            self.outbox.fan_out(d, &batch, &failure).await?;
            return Ok(Handled::Ack);
        }
        batch.set_state(if failure.is_empty() {
            BatchState::Succeeded
        } else {
            BatchState::Failed
        });
        batch.failure_reason = failure.clone();
        self.store.update_batch(&mut batch).await?;
        self.outbox.fan_out(d, &batch, &failure).await?;
        Ok(Handled::Ack)
    }
}

/// Drive a request to `state` (no-op when it is already there), with a log event
/// `<request>/<event>` published with `d`'s ack; `error` is cut to
/// [`MAX_REASON`](super::store::MAX_REASON).
pub async fn settle_request(
    store: &Store,
    outbox: &Outbox,
    d: &Delivery,
    request_id: &str,
    state: RequestState,
    error: &str,
) -> Result<(), HandlerError> {
    // A landed request takes its revisions: read both at once.
    let (request, revisions) = tokio::join!(store.request(request_id), async {
        match state {
            RequestState::Landed => store.revisions(request_id).await.map(Some),
            _ => Ok(None),
        }
    });
    let Some(mut request) = request? else {
        return Ok(());
    };
    let event = match state {
        RequestState::Landed => "landed",
        RequestState::Cancelled => "cancelled",
        _ => "error",
    };
    let error = reason(error);
    if request.state() != state {
        request.set_state(state);
        request.error = error.clone().into_owned();
        if let Some(revisions) = revisions? {
            request.revisions = revisions;
        }
        store.update_request(&mut request).await?;
    } else {
        // A redelivery after the write: its membership move may not have happened.
        store.repair_request_membership(&request).await?;
    }
    outbox.log(d, request_id, event, "", &error).await
}

/// The `conclude` stage (minimal): the batch's terminal state becomes its requests' state.
#[derive(Debug, Clone)]
pub struct ConcludeStage {
    /// State.
    pub store: Store,
    /// Producers.
    pub outbox: Outbox,
}

impl TopicHandler<otopics::Conclude> for ConcludeStage {
    async fn handle(&self, r: BatchRef, d: &Delivery) -> Result<Handled, HandlerError> {
        self.conclude(r, d).await.map_err(bounded)
    }
}

impl ConcludeStage {
    async fn conclude(&self, r: BatchRef, d: &Delivery) -> Result<Handled, HandlerError> {
        let Some(batch) = self.store.batch(&r.id).await? else {
            return Err(HandlerError::permanent(format!(
                "batch {:?} does not exist",
                echo(&r.id)
            )));
        };
        let (state, error) = match batch.state() {
            BatchState::Succeeded => (RequestState::Landed, String::new()),
            BatchState::Failed => (
                RequestState::Error,
                d.metadata
                    .get("failure_reason")
                    .cloned()
                    .unwrap_or_else(|| batch.failure_reason.clone()),
            ),
            BatchState::Cancelled => (RequestState::Cancelled, String::new()),
            other => {
                return Err(HandlerError::retryable(format!(
                    "batch {} is {}, not terminal yet",
                    echo(&batch.id),
                    other.as_str_name()
                )))
            }
        };
        // Members are settled together: each is its own record and its own log partition.
        let settles = batch
            .contains
            .iter()
            .map(|request| settle_request(&self.store, &self.outbox, d, request, state, &error));
        all(settles.collect()).await?;
        Ok(Handled::Ack)
    }
}

/// The `speculate` stage (minimal): records each wake-up, once per message id (a redelivery
/// is not a second wake-up).
#[derive(Debug, Clone)]
pub struct SpeculateStage {
    /// State.
    pub store: Store,
}

impl TopicHandler<otopics::Speculate> for SpeculateStage {
    async fn handle(&self, r: BatchRef, d: &Delivery) -> Result<Handled, HandlerError> {
        self.store.note_speculation(&r.queue, &r.id, &d.id).await?;
        Ok(Handled::Ack)
    }
}

/// Members of `batch` as records, for display.
pub async fn members(store: &Store, batch: &Batch) -> Result<Vec<Request>, HandlerError> {
    let mut out = Vec::new();
    for id in &batch.contains {
        if let Some(r) = store.request(id).await? {
            out.push(r);
        }
    }
    Ok(out)
}
