//! An in-process backend, for testing the generated stubs without a server. It keeps the
//! delivery model (idempotent publish, attempts, outcomes, dead letters, messages published
//! with an ack) in a mutex-guarded map; it has no consumer groups, no concurrency and no persistence, and is not a product
//! backend.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keyway_runtime::transport::{
    BoxFuture, Delivery, Failure, Handler, Lease, Metadata, Outcome, OutgoingMessage,
    PublishReceipt, Publisher, TransportError,
};

/// A message that was dead-lettered, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic it was published on.
    pub topic: String,
    /// The message as published.
    pub message: OutgoingMessage,
    /// The failure that dead-lettered it.
    pub failure: Failure,
    /// The attempt that failed.
    pub attempts: u32,
}

#[derive(Debug, Clone)]
struct Stored {
    message: OutgoingMessage,
    published_at_ms: u64,
    attempt: u32,
}

#[derive(Debug, Default)]
struct State {
    queues: BTreeMap<String, VecDeque<Stored>>,
    seen: HashSet<(String, String, String)>,
    dead: Vec<DeadLetter>,
    clock_ms: u64,
}

/// The in-process backend.
#[derive(Debug)]
pub struct InProcess {
    state: Mutex<State>,
    max_attempts: u32,
}

/// Counts visibility extensions, so tests can see a handler asked for one, and keeps the
/// messages staged to go out with the ack.
#[derive(Debug, Default)]
pub struct CountingLease {
    extensions: AtomicU32,
    staged: Mutex<Vec<(String, OutgoingMessage)>>,
}

impl CountingLease {
    /// How many times the lease was extended.
    pub fn extensions(&self) -> u32 {
        self.extensions.load(Ordering::SeqCst)
    }

    fn take_staged(&self) -> Vec<(String, OutgoingMessage)> {
        std::mem::take(
            &mut *self
                .staged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl Lease for CountingLease {
    fn extend(&self, _by: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        self.extensions.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }

    fn publish_on_ack(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> BoxFuture<'_, Result<(), TransportError>> {
        self.staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((topic.to_owned(), message));
        Box::pin(async { Ok(()) })
    }
}

impl InProcess {
    /// A backend that dead-letters a message after `max_attempts` retryable failures.
    pub fn new(max_attempts: u32) -> Self {
        InProcess {
            state: Mutex::new(State::default()),
            max_attempts,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Messages waiting on `topic`.
    pub fn pending(&self, topic: &str) -> usize {
        self.lock().queues.get(topic).map_or(0, VecDeque::len)
    }

    /// Every dead letter so far.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.clone()
    }

    /// Deliver the next message of `topic` to `handler` and apply its outcome. Returns the
    /// outcome and the lease the handler held, or `None` when the topic is empty.
    pub async fn deliver_next<H: Handler>(
        &self,
        topic: &str,
        handler: &H,
    ) -> Option<(Outcome, Arc<CountingLease>)> {
        let stored = self.lock().queues.get_mut(topic)?.pop_front()?;
        let lease = Arc::new(CountingLease::default());
        let delivery = Delivery {
            topic: topic.to_owned(),
            id: stored.message.id.to_string(),
            partition_key: stored.message.partition_key.clone(),
            payload: stored.message.payload.clone(),
            metadata: stored.message.metadata.clone(),
            published_at_ms: stored.published_at_ms,
            attempt: stored.attempt,
            lease: lease.clone(),
        };
        let outcome = handler.handle(&delivery).await;
        let staged = lease.take_staged();
        if outcome == Outcome::Ack {
            for (topic, message) in staged {
                // Publishing here cannot fail: it only takes the lock.
                let _ = self.publish(&topic, message).await;
            }
        }
        let mut state = self.lock();
        match &outcome {
            Outcome::Ack => {}
            Outcome::Postpone(_) => state
                .queues
                .entry(topic.to_owned())
                .or_default()
                .push_front(stored),
            Outcome::Nack(failure) if stored.attempt >= self.max_attempts => {
                state.dead.push(dead_letter(topic, stored, failure))
            }
            Outcome::Nack(_) => {
                let retry = Stored {
                    attempt: stored.attempt + 1,
                    ..stored
                };
                state
                    .queues
                    .entry(topic.to_owned())
                    .or_default()
                    .push_front(retry);
            }
            Outcome::Reject(failure) => state.dead.push(dead_letter(topic, stored, failure)),
        }
        drop(state);
        Some((outcome, lease))
    }
}

fn dead_letter(topic: &str, stored: Stored, failure: &Failure) -> DeadLetter {
    DeadLetter {
        topic: topic.to_owned(),
        attempts: stored.attempt,
        message: stored.message,
        failure: failure.clone(),
    }
}

impl Publisher for InProcess {
    async fn publish(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> Result<PublishReceipt, TransportError> {
        let mut state = self.lock();
        let key = (
            topic.to_owned(),
            message.partition_key.clone(),
            message.id.to_string(),
        );
        if !state.seen.insert(key) {
            return Ok(PublishReceipt::Duplicate);
        }
        state.clock_ms += 1;
        let published_at_ms = state.clock_ms;
        state
            .queues
            .entry(topic.to_owned())
            .or_default()
            .push_back(Stored {
                message,
                published_at_ms,
                attempt: 1,
            });
        Ok(PublishReceipt::Published)
    }
}

/// Metadata from pairs, for tests.
pub fn metadata<const N: usize>(pairs: [(&str, &str); N]) -> Metadata {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
