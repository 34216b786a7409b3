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

use keyway_runtime::redis::RedisBackend;
use keyway_runtime::stub::{Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{Delivery, MessageId, Metadata};

use super::store::{bounded, echo, is_halted, is_terminal, reason, Member, Store};
use crate::base::change::Change;
use crate::base::mergestrategy::Strategy;
use crate::orchestrator::topics as otopics;
use crate::orchestrator::{
    Batch, BatchRef, BatchState, LandStrategy, LogEvent, Request, RequestState,
};
use crate::runway::messagequeue::{MergeRequest, MergeResult, MergeStep, Outcome};
use crate::topics as rtopics;

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
            contains: batch.contains.clone(),
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
        let read = self
            .store
            .batch_with_requests(&r.id, &r.contains, false)
            .await?;
        let Some((batch, requests)) = read else {
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
        let mut steps = Vec::with_capacity(requests.len());
        for (id, (request, _)) in batch.contains.iter().zip(requests) {
            let Some(request) = request else {
                return Err(HandlerError::permanent(format!(
                    "request {:?} of batch {:?} does not exist",
                    echo(id),
                    echo(&batch.id)
                )));
            };
            let strategy = strategy(request.strategy()) as i32;
            steps.push(MergeStep {
                step_id: request.id,
                change: Some(Change { uris: request.uris }),
                strategy,
            });
        }
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
        if is_terminal(batch.state()) {
            if !revisions.is_empty() {
                self.store.set_revisions(&revisions).await?;
            }
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
        // The revisions with the state: conclude, which copies them, runs once it is terminal.
        self.store
            .update_batch_with_revisions(&mut batch, &revisions)
            .await?;
        self.outbox.fan_out(d, &batch, &failure).await?;
        Ok(Handled::Ack)
    }
}

/// Drive requests `ids` to `state` (a no-op for one that is already there, and for one that
/// does not exist), with a log event `<request>/<event>` each, in `ids`' order, published with
/// `d`'s ack; `error` is cut to [`MAX_REASON`](super::store::MAX_REASON). One script reads the
/// records (with their revisions, for `Landed`) and one writes those that change, all or none.
pub async fn settle_requests(
    store: &Store,
    outbox: &Outbox,
    d: &Delivery,
    ids: &[String],
    state: RequestState,
    error: &str,
) -> Result<(), HandlerError> {
    let read = store.members(ids, state == RequestState::Landed).await?;
    settle_read(store, outbox, d, ids, read, state, error).await
}

/// [`settle_requests`] with the requests `ids` read already (with their revisions, for
/// `Landed`).
async fn settle_read(
    store: &Store,
    outbox: &Outbox,
    d: &Delivery,
    ids: &[String],
    read: Vec<Member>,
    state: RequestState,
    error: &str,
) -> Result<(), HandlerError> {
    let event = match state {
        RequestState::Landed => "landed",
        RequestState::Cancelled => "cancelled",
        _ => "error",
    };
    let error = reason(error);
    let mut changed = Vec::new();
    let mut settled = Vec::new();
    let mut present = Vec::new();
    for (id, (request, revisions)) in ids.iter().zip(read) {
        let Some(mut request) = request else {
            continue;
        };
        present.push(id);
        if request.state() == state {
            settled.push(request);
            continue;
        }
        request.set_state(state);
        request.error = error.clone().into_owned();
        if state == RequestState::Landed {
            request.revisions = revisions;
        }
        changed.push(request);
    }
    if !changed.is_empty() {
        store.update_requests(&mut changed).await?;
    }
    // A redelivery after the write: its membership move may not have happened.
    for request in &settled {
        store.repair_request_membership(request).await?;
    }
    for id in present {
        outbox.log(d, id, event, "", &error).await?;
    }
    Ok(())
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
        // The revisions are read whatever the outcome: the batch's state is not known yet.
        let read = self
            .store
            .batch_with_requests(&r.id, &r.contains, true)
            .await?;
        let Some((batch, requests)) = read else {
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
        settle_read(
            &self.store,
            &self.outbox,
            d,
            &batch.contains,
            requests,
            state,
            &error,
        )
        .await?;
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
