//! What a queue backend provides, independent of any one backend.
//!
//! The model is that of a work queue with consumer groups:
//! - a message carries an id, a partition key, a payload, a metadata map and the time it was
//!   published; publishing is idempotent on (topic, partition key, id);
//! - a consumer receives a [`Delivery`] (the message plus its 1-based attempt number and a
//!   [`Lease`] it may extend while it works) and answers with an [`Outcome`]:
//!   - [`Outcome::Ack`] means done;
//!   - [`Outcome::Nack`] is a retryable failure: redelivered after a backoff, counted as an
//!     attempt, dead-lettered with this reason when attempts run out;
//!   - [`Outcome::Postpone`] is not a failure, but not yet: redelivered after the delay, not
//!     counted as an attempt;
//!   - [`Outcome::Reject`] is a non-retryable failure: dead-lettered at once;
//! - a handler may publish with its delivery's ack ([`Delivery::publish_on_ack`]): such
//!   messages go out only if it acks, atomically with the ack where the backend can.
//!
//! A backend implements [`Publisher`] and drives a [`Handler`] from its consume loop. The
//! generated, typed stubs ([`crate::stub`]) sit on top of these two traits.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// String metadata that travels with a message.
pub type Metadata = BTreeMap<String, String>;

/// A future returned through a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message id. Ids of messages caused by other messages are composed as
/// `entity/cause1/cause2` with [`MessageId::intent`], so a redelivered cause produces the same
/// id again and idempotent publish drops the duplicate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

/// A message id that is empty or has an empty segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessageId(String);

impl fmt::Display for InvalidMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidMessageId {}

impl MessageId {
    /// An id as given, which must not be empty.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidMessageId> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidMessageId("a message id must not be empty".into()));
        }
        Ok(MessageId(id))
    }

    /// The id of the intent to act on `entity` because of `causes`: `entity/cause1/cause2`.
    /// Every segment must be non-empty.
    pub fn intent(entity: &str, causes: &[&str]) -> Result<Self, InvalidMessageId> {
        if entity.is_empty() {
            return Err(InvalidMessageId(
                "the entity of an intent id is empty".into(),
            ));
        }
        let mut id = entity.to_owned();
        for (i, cause) in causes.iter().enumerate() {
            if cause.is_empty() {
                return Err(InvalidMessageId(format!(
                    "cause {} of intent id {entity:?} is empty",
                    i + 1
                )));
            }
            id.push('/');
            id.push_str(cause);
        }
        Ok(MessageId(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message as a producer hands it to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Deduplication and correlation id.
    pub id: MessageId,
    /// Messages with the same partition key are processed one at a time, in publish order.
    pub partition_key: String,
    /// The encoded payload (protobuf JSON).
    pub payload: Vec<u8>,
    /// String metadata.
    pub metadata: Metadata,
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishReceipt {
    /// The message was stored.
    Published,
    /// A message with the same (topic, partition key, id) was published before; nothing was
    /// written. Not an error: it is how retries stay idempotent.
    Duplicate,
}

/// A message as a backend delivers it to a consumer.
#[derive(Clone)]
pub struct Delivery {
    /// The topic key it was published on.
    pub topic: String,
    /// Its id.
    pub id: String,
    /// Its partition key.
    pub partition_key: String,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// Its metadata.
    pub metadata: Metadata,
    /// When it was published, in milliseconds since the Unix epoch (backend clock).
    pub published_at_ms: u64,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// The lease on this delivery.
    pub lease: Arc<dyn Lease>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("id", &self.id)
            .field("partition_key", &self.partition_key)
            .field("payload_len", &self.payload.len())
            .field("metadata", &self.metadata)
            .field("published_at_ms", &self.published_at_ms)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Delivery {
    /// Keep this delivery from being handed to another consumer for `by` more (the consumer is
    /// still working on it).
    pub async fn extend_visibility(&self, by: Duration) -> Result<(), TransportError> {
        self.lease.extend(by).await
    }

    /// Publish `message` on `topic` with this delivery's ack: the transactional outbox of a
    /// handler. Messages staged this way go out, in the order they were staged, only if the
    /// handler acks, and where the backend can in the same atomic step as the ack (so a crash
    /// can never leave the ack without its messages or the messages without the ack). On a
    /// nack, postponement or reject they are dropped: the redelivery stages them again.
    /// Publishing stays idempotent on (topic, partition key, id).
    ///
    /// Errors that can be known now (the topic is not registered, its stream was written by
    /// another protocol version) are returned here; a failure to publish at ack time turns
    /// the ack into a nack (retryable) or a reject.
    pub async fn publish_on_ack(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> Result<(), TransportError> {
        self.lease.publish_on_ack(topic, message).await
    }
}

/// A consumer's hold on a delivery, which expires unless extended, and the messages it will
/// publish when it is acked.
pub trait Lease: Send + Sync {
    /// Extend the hold by `by` from now.
    fn extend(&self, by: Duration) -> BoxFuture<'_, Result<(), TransportError>>;

    /// Stage `message` on `topic` to be published with the ack (see
    /// [`Delivery::publish_on_ack`]).
    fn publish_on_ack(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> BoxFuture<'_, Result<(), TransportError>>;
}

/// Why a delivery failed, as a dead letter records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One line saying what went wrong.
    pub reason: String,
    /// Structured detail (for a payload that does not decode: `kind`, `path`, `offset`).
    pub detail: Metadata,
}

impl Failure {
    /// A failure with a reason and no detail.
    pub fn new(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            detail: Metadata::new(),
        }
    }

    /// Add a detail entry.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.detail.insert(key.into(), value.into());
        self
    }
}

/// How a consumer settles a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ack,
    /// Retryable failure: redeliver after a backoff; counts as an attempt.
    Nack(Failure),
    /// Not yet: redeliver after the delay; does not count as an attempt. Later messages of
    /// the same partition key wait behind it.
    Postpone(Duration),
    /// Non-retryable failure: dead-letter now.
    Reject(Failure),
}

/// What kind of backend failure this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The connection failed or was lost.
    Connection,
    /// The backend did not answer in time.
    Timeout,
    /// The backend is busy or loading, or asked to try again.
    Busy,
    /// The request itself is wrong (unknown topic, invalid argument).
    Invalid,
    /// Anything else.
    Other,
}

/// A backend failed to do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
}

impl TransportError {
    /// An error of `kind`.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed (connection, timeout, busy).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            TransportErrorKind::Connection | TransportErrorKind::Timeout | TransportErrorKind::Busy
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

/// Retry backoff: `initial × multiplier^(failures - 1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// After the first failure. Default 1 s.
    pub initial: Duration,
    /// Growth per further failure. Default 2.
    pub multiplier: f64,
    /// Cap. Default 30 s.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retrying after `failures` failed attempts (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }
}

/// One subscription: a consumer group reading one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionConfig {
    /// The topic key to read.
    pub topic: String,
    /// The consumer group. Groups are independent: each sees every message.
    pub group: String,
    /// Deliveries in flight at once per process. Default 10.
    pub batch_size: usize,
    /// A delivery not settled (or extended) within this is redelivered. Default 60 s.
    pub visibility_timeout: Duration,
    /// Counted attempts before a retryable failure is dead-lettered. Default 3.
    pub max_attempts: u32,
    /// Delay before a retry.
    pub backoff: Backoff,
    /// Whether failures go to the dead-letter topic (`<topic>_dlq`); when off, they are
    /// dropped with a log line. Default on.
    pub dead_letter: bool,
    /// Treat every failure as retryable (rejects become nacks). Default off.
    pub retry_every_error: bool,
}

impl SubscriptionConfig {
    /// The defaults for reading `topic` as `group`.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> Self {
        SubscriptionConfig {
            topic: topic.into(),
            group: group.into(),
            batch_size: 10,
            visibility_timeout: Duration::from_secs(60),
            max_attempts: 3,
            backoff: Backoff::default(),
            dead_letter: true,
            retry_every_error: false,
        }
    }

    /// The dead-letter-consumer preset: no dead-letter stream of its own, 1000 attempts, every
    /// error retried.
    pub fn dead_letter_consumer(topic: impl Into<String>, group: impl Into<String>) -> Self {
        SubscriptionConfig {
            max_attempts: 1000,
            dead_letter: false,
            retry_every_error: true,
            ..SubscriptionConfig::new(topic, group)
        }
    }
}

/// Publishes encoded messages on logical topic keys. The backend maps a key to its stream.
pub trait Publisher: Send + Sync {
    /// Publish `message` on `topic`, idempotently on (topic, partition key, id).
    fn publish(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<PublishReceipt, TransportError>> + Send;
}

impl<P: Publisher> Publisher for Arc<P> {
    fn publish(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<PublishReceipt, TransportError>> + Send {
        (**self).publish(topic, message)
    }
}

impl<P: Publisher> Publisher for &P {
    fn publish(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<PublishReceipt, TransportError>> + Send {
        (**self).publish(topic, message)
    }
}

/// Handles raw deliveries; a backend's consume loop calls it and settles each delivery with
/// the outcome. The typed [`crate::stub::Consumer`] implements it.
pub trait Handler: Send + Sync {
    /// Handle one delivery.
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_ids() {
        assert_eq!(
            MessageId::intent("q/batch/1", &["conclude", "merged"])
                .unwrap()
                .as_str(),
            "q/batch/1/conclude/merged"
        );
        assert_eq!(MessageId::intent("q/1", &[]).unwrap().as_str(), "q/1");
        assert!(MessageId::intent("", &["a"]).is_err());
        let e = MessageId::intent("q/1", &["a", ""]).unwrap_err();
        assert_eq!(e.to_string(), "cause 2 of intent id \"q/1\" is empty");
        assert!(MessageId::new("").is_err());
    }

    #[test]
    fn retryable_transport_errors() {
        assert!(TransportError::new(TransportErrorKind::Busy, "LOADING").is_retryable());
        assert!(!TransportError::new(TransportErrorKind::Invalid, "no such topic").is_retryable());
    }
}
