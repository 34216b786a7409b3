//! Dead-letter reconcilers: they drive to a terminal state whatever a dead-lettered message left
//! hanging, so a batch never waits forever for an answer that will not come.
//!
//! - `submitqueue-merge_dlq` and `merge-signal_dlq` fail the batch: missing → ack; already
//!   failed → repair and fan out again; succeeded or cancelled → leave it; anything else
//!   (cancelling and merging included) → failed. Its requests go to `error` with the dead
//!   letter's last error, each with a terminal log event `<request>/error`.
//! - `runway-merge_dlq` and `merge-conflict-check_dlq` answer the request FAILED with reason
//!   `dead-lettered: <last error>`, message id `<id>/dlq`.
//! - `conclude_dlq` and `speculate_dlq` are fan-outs of a batch that is already terminal:
//!   nothing is left to fail, so each is parked with `dead-lettered: <last error>` for an
//!   operator (its requests may still be queued).
//!
//! They run with the dead-letter-consumer preset (no dead-letter stream of their own, 1000
//! attempts, every error retried). A message they can never handle (a payload that does not
//! decode, an empty id) is not retried; one whose handling still fails on the subscription's
//! last attempt is not dropped: both are *parked* on the `parked` topic with the reason,
//! counted (`keyway_parked_total`), and listed by `keyway dlq list`.
//!
//! A parked record's message id is `<dead-letter topic>/parked/<digest>`, the digest (SHA-1)
//! taken over the whole dead letter but its attempt count: its message id, partition key,
//! publish time, payload and metadata (`dlq.stream_entry` and `dlq.failed_at` included). So
//! distinct dead letters are distinct records, whatever their ids say, and a redelivery of one
//! (within the publish dedup, `redis.dedup_ttl`) is not parked twice. Two dead letters that
//! agree byte for byte are one record: a delivery does not carry its stream entry id.

use keyway_runtime::json::{self, JsonMessage};
use keyway_runtime::redis::RedisBackend;
use keyway_runtime::stub::{HandlerError, Producer};
use keyway_runtime::topic::Contract;
use keyway_runtime::transport::{
    Delivery, Failure, Handler, MessageId, Metadata, Outcome, PublishReceipt, SubscriptionConfig,
};

use super::orchestrator::{settle_requests, MergeSignalStage, Outbox};
use super::store::{echo, prefixed, reason, Store};
use crate::merge_service::Answers;
use crate::orchestrator::topics as otopics;
use crate::orchestrator::{BatchRef, BatchState, Parked, RequestState};
use crate::runway::messagequeue::{MergeRequest, MergeResult, Outcome as MergeOutcome};
use crate::topics as rtopics;

/// Why a dead letter was dead-lettered, from its metadata.
pub fn last_error(d: &Delivery) -> &str {
    d.metadata
        .get("dlq.last_error")
        .map_or("unknown failure", String::as_str)
}

/// The parking id of `d` (see the module docs).
fn parking_id(d: &Delivery) -> Result<MessageId, String> {
    use std::fmt::Write;
    let mut text = String::new();
    let mut part = |s: &str| {
        let _ = write!(text, "{}:", s.len());
        text.push_str(s);
    };
    part(&d.id);
    part(&d.partition_key);
    part(&d.published_at_ms.to_string());
    let mut payload = String::with_capacity(d.payload.len() * 2);
    for b in &d.payload {
        let _ = write!(payload, "{b:02x}");
    }
    part(&payload);
    for (k, v) in &d.metadata {
        part(k);
        part(v);
    }
    let digest = fred::util::sha1_hash(&text);
    MessageId::intent(&d.topic, &["parked", &digest]).map_err(|e| e.to_string())
}

/// Parks messages a reconciler cannot handle.
#[derive(Debug, Clone)]
pub struct Parking {
    producer: Producer<otopics::Parked, RedisBackend>,
    backend: RedisBackend,
    last_attempt: u32,
}

impl Parking {
    /// Parking through `backend`, for a subscription with the dead-letter-consumer preset's
    /// attempts (see [`Parking::last_attempt`]).
    pub fn new(backend: &RedisBackend) -> Self {
        Parking {
            producer: Producer::new(backend.clone()),
            backend: backend.clone(),
            last_attempt: SubscriptionConfig::dead_letter_consumer("", "").max_attempts,
        }
    }

    /// The subscription gives up after `max_attempts`: a delivery still failing on that attempt
    /// is parked instead of failed (the preset has no dead-letter stream, so a failure there
    /// would drop it).
    pub fn last_attempt(mut self, max_attempts: u32) -> Self {
        self.last_attempt = max_attempts.max(1);
        self
    }

    /// Park `d` with `why` (cut to [`MAX_REASON`](super::store::MAX_REASON)): acked when parked
    /// (or parked before), retried when parking itself failed.
    pub async fn park(&self, d: &Delivery, why: &str) -> Outcome {
        let id = match parking_id(d) {
            Ok(id) => id,
            Err(e) => {
                return Outcome::Nack(Failure::new(prefixed("cannot form a parking id: ", &e)))
            }
        };
        let why = reason(why);
        let parked = Parked {
            topic: d.topic.clone(),
            message_id: d.id.clone(),
            reason: why.clone().into_owned(),
            payload: d.payload.clone(),
            metadata: d.metadata.clone().into_iter().collect(),
        };
        match self
            .producer
            .publish(&parked, id, &d.topic, Metadata::new())
            .await
        {
            Ok(PublishReceipt::Published) => {
                tracing::warn!(topic = %d.topic, id = %echo(&d.id), reason = %why, "dead letter parked for an operator");
                self.backend.metrics().count(
                    "keyway_parked_total",
                    &[("topic", d.topic.as_str())],
                    1,
                );
                Outcome::Ack
            }
            Ok(PublishReceipt::Duplicate) => Outcome::Ack,
            Err(e) => Outcome::Nack(Failure::new(prefixed("parking failed: ", &e.to_string()))),
        }
    }

    /// Settle `d` by what handling it gave: done → ack; a failure before the last attempt →
    /// retry (every error, as the preset does: a reconciler waits out what an operator can
    /// fix); a failure on the last attempt → park.
    pub async fn settle(&self, d: &Delivery, result: Result<(), HandlerError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Ack,
            Err(e) if d.attempt < self.last_attempt => {
                let f = e.failure();
                let mut failure = Failure::new(reason(&f.reason));
                for (k, v) in &f.detail {
                    failure = failure.with_detail(k.clone(), reason(v).into_owned());
                }
                Outcome::Nack(failure)
            }
            Err(e) => {
                let why = format!(
                    "still failing on attempt {}, the last: {}",
                    d.attempt,
                    e.failure().reason
                );
                self.park(d, &why).await
            }
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

    /// Fail batch `id` because of dead letter `d`, whose last error is `error`, publishing
    /// with `d`'s ack.
    pub async fn fail_batch(
        &self,
        d: &Delivery,
        id: &str,
        error: &str,
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
                batch.failure_reason = prefixed("dead-lettered: ", error);
                self.store.update_batch(&mut batch).await?;
            }
        }
        self.outbox
            .fan_out(d, &batch, &batch.failure_reason)
            .await?;
        let detail: Vec<String> = d
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("dlq."))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let error = format!("{error} ({})", detail.join(", "));
        settle_requests(
            &self.store,
            &self.outbox,
            d,
            &batch.contains,
            RequestState::Error,
            &error,
        )
        .await?;
        Ok(())
    }
}

impl Handler for BatchReconciler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        // A success that could not be applied in time still landed: apply it now rather than
        // fail a batch whose changes are on the target. Only one that cannot be applied at all
        // (no queue, no batch) fails the batch.
        if d.topic.starts_with(rtopics::TopicKey::MergeSignal.as_str()) {
            if let Ok(result) = decode::<MergeResult>(d) {
                if result.outcome() == MergeOutcome::Succeeded {
                    let stage = MergeSignalStage {
                        store: self.store.clone(),
                        outbox: self.outbox.clone(),
                    };
                    match stage.signal(result, d).await {
                        Ok(_) => return self.parking.settle(d, Ok(())).await,
                        Err(e) if e.is_retryable() => return self.parking.settle(d, Err(e)).await,
                        Err(_) => {}
                    }
                }
            }
        }
        match Self::batch_id(d) {
            Ok(id) => {
                let result = self.fail_batch(d, &id, last_error(d)).await;
                self.parking.settle(d, result).await
            }
            Err(why) => self.parking.park(d, &why).await,
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

    /// See [`Parking::last_attempt`].
    pub fn last_attempt(mut self, max_attempts: u32) -> Self {
        self.parking = self.parking.last_attempt(max_attempts);
        self
    }

    async fn answer(&self, request: MergeRequest, d: &Delivery) -> Result<(), HandlerError> {
        let result = MergeResult {
            id: request.id.clone(),
            outcome: MergeOutcome::Failed as i32,
            reason: prefixed("dead-lettered: ", last_error(d)),
            steps: Vec::new(),
            queue_name: request.queue_name.clone(),
        };
        let id = MessageId::intent(&request.id, &["dlq"])
            .map_err(|e| HandlerError::permanent(reason(&e.to_string())))?;
        let commit = d.topic.starts_with(rtopics::TopicKey::RunwayMerge.as_str());
        self.answers.publish(d, &result, id, commit).await
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
            Ok(request) => {
                let result = self.answer(request, d).await;
                self.parking.settle(d, result).await
            }
            Err(why) => self.parking.park(d, &why).await,
        }
    }
}

/// Parks the dead letters of the fan-out stages, `conclude_dlq` and `speculate_dlq`, with
/// `dead-lettered: <last error>`: their batch is already terminal, so there is nothing left to
/// fail, and what is left to do (settle its requests, speculate again) is an operator's call.
#[derive(Debug, Clone)]
pub struct FanOutReconciler {
    parking: Parking,
}

impl FanOutReconciler {
    /// A reconciler parking through `backend`.
    pub fn new(backend: &RedisBackend) -> Self {
        FanOutReconciler {
            parking: Parking::new(backend),
        }
    }

    /// See [`Parking::last_attempt`].
    pub fn last_attempt(mut self, max_attempts: u32) -> Self {
        self.parking = self.parking.last_attempt(max_attempts);
        self
    }
}

impl Handler for FanOutReconciler {
    async fn handle(&self, d: &Delivery) -> Outcome {
        self.parking
            .park(d, &prefixed("dead-lettered: ", last_error(d)))
            .await
    }
}
