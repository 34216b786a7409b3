//! Dead-letter reconcilers: they drive to a terminal state whatever a dead-lettered message left
//! hanging, so a batch never waits forever for an answer that will not come.
//!
//! - `submitqueue-merge_dlq` and `merge-signal_dlq` fail the batch: missing → ack; already
//!   failed → repair and fan out again; succeeded or cancelled → leave it; anything else
//!   (cancelling and merging included) → failed. Its requests go to `error` with the dead
//!   letter's last error, each with a terminal log event `<request>/error`.
//! - `runway-merge_dlq` and `merge-conflict-check_dlq` answer the request FAILED with reason
//!   `dead-lettered: <last error>`, message id `<id>/dlq`.
//!
//! They run with the dead-letter-consumer preset (no dead-letter stream of their own, 1000
//! attempts, every error retried). A message they can never handle (a payload that does not
//! decode, an empty id) is not retried 1000 times and dropped: it is *parked* on the `parked`
//! topic with the reason, counted (`keyway_parked_total`), and listed by `keyway dlq list`.

use keyway_runtime::json::{self, JsonMessage};
use keyway_runtime::redis::RedisBackend;
use keyway_runtime::stub::{HandlerError, Producer};
use keyway_runtime::topic::Contract;
use keyway_runtime::transport::{Delivery, Failure, Handler, MessageId, Metadata, Outcome};

use super::orchestrator::{settle_request, Outbox};
use super::store::Store;
use crate::merge_service::Answers;
use crate::orchestrator::topics as otopics;
use crate::orchestrator::{BatchRef, BatchState, Parked, RequestState};
use crate::runway::messagequeue::{MergeRequest, MergeResult, Outcome as MergeOutcome};
use crate::topics as rtopics;

/// Why a dead letter was dead-lettered, from its metadata.
pub fn last_error(d: &Delivery) -> String {
    d.metadata
        .get("dlq.last_error")
        .cloned()
        .unwrap_or_else(|| "unknown failure".to_owned())
}

/// Parks messages a reconciler cannot handle.
#[derive(Debug, Clone)]
pub struct Parking {
    producer: Producer<otopics::Parked, RedisBackend>,
    backend: RedisBackend,
}

impl Parking {
    /// Parking through `backend`.
    pub fn new(backend: &RedisBackend) -> Self {
        Parking {
            producer: Producer::new(backend.clone()),
            backend: backend.clone(),
        }
    }

    /// Park `d` with `reason`: acked when parked, retried when parking itself failed.
    pub async fn park(&self, d: &Delivery, reason: &str) -> Outcome {
        let entry = d
            .metadata
            .get("dlq.stream_entry")
            .cloned()
            .unwrap_or_else(|| "unknown-entry".to_owned());
        let id = if d.id.is_empty() {
            MessageId::intent(&d.topic, &[&entry, "parked"])
        } else {
            MessageId::intent(&d.topic, &[&d.id, &entry, "parked"])
        };
        let Ok(id) = id else {
            return Outcome::Nack(Failure::new("cannot form a parking id"));
        };
        let parked = Parked {
            topic: d.topic.clone(),
            message_id: d.id.clone(),
            reason: reason.to_owned(),
            payload: d.payload.clone(),
            metadata: d.metadata.clone().into_iter().collect(),
        };
        match self
            .producer
            .publish(&parked, id, &d.topic, Metadata::new())
            .await
        {
            Ok(_) => {
                tracing::warn!(topic = %d.topic, id = %d.id, reason, "dead letter parked for an operator");
                self.backend.metrics().count(
                    "keyway_parked_total",
                    &[("topic", d.topic.as_str())],
                    1,
                );
                Outcome::Ack
            }
            Err(e) => Outcome::Nack(Failure::new(format!("parking failed: {e}"))),
        }
    }
}

/// Decode a dead letter's payload, or say why it cannot be.
fn decode<M: JsonMessage + Contract>(d: &Delivery) -> Result<M, String> {
    if d.metadata.contains_key("dlq.tombstone") {
        return Err(
            "the dead letter is a tombstone: its entry was deleted before it could be handled"
                .into(),
        );
    }
    json::from_slice(&d.payload)
        .map_err(|e| format!("payload does not decode as {}: {e}", M::FULL_NAME))
}

fn outcome(result: Result<(), HandlerError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ack,
        Err(e) => Outcome::Nack(e.failure().clone()),
    }
}

/// Reconciles dead letters of the stages that carry a batch: `submitqueue-merge_dlq`
/// (`BatchRef`) and `merge-signal_dlq` (`MergeResult`, whose id is the batch id).
#[derive(Debug, Clone)]
pub struct BatchReconciler {
    /// State.
    pub store: Store,
    /// Producers.
    pub outbox: Outbox,
    /// Where the impossible goes.
    pub parking: Parking,
}

impl BatchReconciler {
    fn batch_id(d: &Delivery) -> Result<String, String> {
        let id = if d.topic.starts_with(rtopics::TopicKey::MergeSignal.as_str()) {
            decode::<MergeResult>(d)?.id
        } else {
            decode::<BatchRef>(d)?.id
        };
        if id.is_empty() {
            return Err("the dead letter names no batch (empty id)".into());
        }
        Ok(id)
    }

    /// Fail batch `id` because of a dead letter with `error` and `metadata`.
    pub async fn fail_batch(
        &self,
        id: &str,
        error: &str,
        metadata: &Metadata,
    ) -> Result<(), HandlerError> {
        let Some(mut batch) = self.store.batch(id).await? else {
            return Ok(());
        };
        match batch.state() {
            BatchState::Succeeded | BatchState::Cancelled => return Ok(()),
            BatchState::Failed => {
                self.store.repair_batch_membership(&batch).await?;
            }
            _ => {
                batch.set_state(BatchState::Failed);
                batch.failure_reason = format!("dead-lettered: {error}");
                self.store.update_batch(&mut batch).await?;
            }
        }
        self.outbox.fan_out(&batch, &batch.failure_reason).await?;
        let detail: Vec<String> = metadata
            .iter()
            .filter(|(k, _)| k.starts_with("dlq."))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let error = format!("{error} ({})", detail.join(", "));
        for request in &batch.contains {
            settle_request(
                &self.store,
                &self.outbox,
                request,
                RequestState::Error,
                &error,
            )
            .await?;
        }
        Ok(())
    }
}

impl Handler for BatchReconciler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        match Self::batch_id(d) {
            Ok(id) => outcome(self.fail_batch(&id, &last_error(d), &d.metadata).await),
            Err(reason) => self.parking.park(d, &reason).await,
        }
    }
}

/// Answers dead-lettered merge requests FAILED, so the orchestrator hears back.
#[derive(Debug, Clone)]
pub struct RunwayReconciler {
    answers: Answers,
    parking: Parking,
}

impl RunwayReconciler {
    /// A reconciler answering through `backend`.
    pub fn new(backend: &RedisBackend) -> Self {
        RunwayReconciler {
            answers: Answers::new(backend),
            parking: Parking::new(backend),
        }
    }

    async fn answer(&self, request: MergeRequest, d: &Delivery) -> Result<(), HandlerError> {
        let result = MergeResult {
            id: request.id.clone(),
            outcome: MergeOutcome::Failed as i32,
            reason: format!("dead-lettered: {}", last_error(d)),
            steps: Vec::new(),
            queue_name: request.queue_name.clone(),
        };
        let id = MessageId::intent(&request.id, &["dlq"])
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let commit = d.topic.starts_with(rtopics::TopicKey::RunwayMerge.as_str());
        self.answers
            .publish(&result, id, &d.partition_key, commit)
            .await
    }
}

impl Handler for RunwayReconciler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        match decode::<MergeRequest>(d) {
            Ok(request) if request.id.is_empty() => {
                self.parking
                    .park(d, "the dead letter names no request (empty id)")
                    .await
            }
            Ok(request) => outcome(self.answer(request, d).await),
            Err(reason) => self.parking.park(d, &reason).await,
        }
    }
}
