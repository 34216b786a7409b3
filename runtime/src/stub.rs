//! Typed producer and consumer stubs over any backend.
//!
//! A [`Producer<T, P>`] publishes only `T::Message` on `T::KEY`, encoded as protobuf JSON; a
//! [`Consumer<T, H>`] decodes each delivery as `T::Message` before the handler sees it. A
//! payload that does not decode never reaches the handler: the delivery is rejected (so the
//! backend dead-letters it) with the decode error as its reason.
//!
//! ```
//! use keyway_runtime::stub::{Handled, HandlerError, TopicHandler};
//! use keyway_runtime::transport::Delivery;
//! # use keyway_runtime::topic::{Contract, Topic};
//! # #[derive(Clone, PartialEq, prost::Message)] struct Ping { #[prost(string, tag = "1")] id: String }
//! # impl keyway_runtime::json::JsonMessage for Ping {
//! #     fn encode_json(&self, w: &mut keyway_runtime::__private::Writer) -> Result<(), keyway_runtime::json::EncodeError> { w.raw(b"{}"); Ok(()) }
//! #     fn decode_json(p: &mut keyway_runtime::__private::Parser<'_>) -> Result<Self, keyway_runtime::json::DecodeError> { p.skip_value()?; Ok(Ping::default()) }
//! # }
//! # impl Contract for Ping { const FULL_NAME: &'static str = "demo.Ping"; const TOPIC_KEYS: &'static [&'static str] = &["ping"]; }
//! # struct PingTopic;
//! # impl Topic for PingTopic { type Message = Ping; const KEY: &'static str = "ping"; }
//!
//! struct Pong;
//!
//! impl TopicHandler<PingTopic> for Pong {
//!     async fn handle(&self, ping: Ping, delivery: &Delivery) -> Result<Handled, HandlerError> {
//!         if delivery.attempt > 1 {
//!             // A retry: make sure earlier work is idempotent.
//!         }
//!         println!("ping {}", ping.id);
//!         Ok(Handled::Ack)
//!     }
//! }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use crate::json::{self, EncodeError};
use crate::topic::{Contract, Topic};
use crate::transport::{
    Delivery, Failure, Handler, MessageId, Metadata, Outcome, OutgoingMessage, PublishReceipt,
    Publisher, TransportError,
};

/// Publishes `T::Message` on topic `T`.
#[derive(Debug, Clone)]
pub struct Producer<T, P> {
    publisher: P,
    topic: PhantomData<fn() -> T>,
}

/// Publishing failed.
#[derive(Debug)]
pub enum PublishError {
    /// The message has no protobuf-JSON form (see [`EncodeError`]).
    Encode(EncodeError),
    /// The backend failed.
    Transport(TransportError),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Encode(e) => e.fmt(f),
            PublishError::Transport(e) => write!(f, "publish failed: {e}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::Encode(e) => Some(e),
            PublishError::Transport(e) => Some(e),
        }
    }
}

impl<T: Topic, P: Publisher> Producer<T, P> {
    /// A producer for topic `T` over `publisher`.
    pub fn new(publisher: P) -> Self {
        Producer {
            publisher,
            topic: PhantomData,
        }
    }

    /// The backend.
    pub fn publisher(&self) -> &P {
        &self.publisher
    }

    /// Encode `message` and publish it on `T::KEY` with `id`, `partition_key` and `metadata`.
    pub async fn publish(
        &self,
        message: &T::Message,
        id: MessageId,
        partition_key: impl Into<String>,
        metadata: Metadata,
    ) -> Result<PublishReceipt, PublishError> {
        let message = outgoing::<T>(message, id, partition_key.into(), metadata)?;
        self.publisher
            .publish(T::KEY, message)
            .await
            .map_err(PublishError::Transport)
    }

    /// Encode `message` and stage it on `T::KEY` to be published with `delivery`'s ack (see
    /// [`Delivery::publish_on_ack`]).
    pub async fn publish_on_ack(
        &self,
        delivery: &Delivery,
        message: &T::Message,
        id: MessageId,
        partition_key: impl Into<String>,
        metadata: Metadata,
    ) -> Result<(), PublishError> {
        let message = outgoing::<T>(message, id, partition_key.into(), metadata)?;
        delivery
            .publish_on_ack(T::KEY, message)
            .await
            .map_err(PublishError::Transport)
    }
}

/// `message` encoded as protobuf JSON, addressed.
fn outgoing<T: Topic>(
    message: &T::Message,
    id: MessageId,
    partition_key: String,
    metadata: Metadata,
) -> Result<OutgoingMessage, PublishError> {
    Ok(OutgoingMessage {
        id,
        partition_key,
        payload: json::to_vec(message).map_err(PublishError::Encode)?,
        metadata,
    })
}

/// What a handler did with a message it could handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Done.
    Ack,
    /// Not yet: deliver again after this delay (not counted as an attempt).
    Postpone(Duration),
}

/// A handler failed. Retryable failures are redelivered after a backoff; non-retryable ones
/// are dead-lettered at once.
///
/// Any error converts into one with `?`. Such an unclassified error is non-retryable, unless it
/// is (or is caused by) a retryable [`TransportError`], such as a lost connection.
#[derive(Debug)]
pub struct HandlerError {
    retryable: bool,
    failure: Failure,
}

impl HandlerError {
    /// A failure worth retrying (a conflict, a dependency that is down).
    pub fn retryable(reason: impl Into<String>) -> Self {
        HandlerError {
            retryable: true,
            failure: Failure::new(reason),
        }
    }

    /// A failure no retry can fix (the message is invalid, the entity does not exist).
    pub fn permanent(reason: impl Into<String>) -> Self {
        HandlerError {
            retryable: false,
            failure: Failure::new(reason),
        }
    }

    /// Add structured detail for the dead letter.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.failure.detail.insert(key.into(), value.into());
        self
    }

    /// Whether the delivery will be retried.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The failure as a dead letter records it.
    pub fn failure(&self) -> &Failure {
        &self.failure
    }
}

impl<E: std::error::Error + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let mut retryable = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(e) = cause {
            if let Some(t) = e.downcast_ref::<TransportError>() {
                retryable = t.is_retryable();
                break;
            }
            cause = e.source();
        }
        HandlerError {
            retryable,
            failure: Failure::new(error.to_string()),
        }
    }
}

/// Handles the messages of topic `T`, already decoded.
pub trait TopicHandler<T: Topic>: Send + Sync {
    /// Handle one message; `delivery` has its id, partition key, metadata, attempt and lease.
    fn handle(
        &self,
        message: T::Message,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<Handled, HandlerError>> + Send;
}

/// Decodes deliveries of topic `T` and hands them to `H`; a backend drives it as a [`Handler`].
#[derive(Debug, Clone)]
pub struct Consumer<T, H> {
    handler: H,
    topic: PhantomData<fn() -> T>,
}

impl<T: Topic, H: TopicHandler<T>> Consumer<T, H> {
    /// A consumer of topic `T` that calls `handler`.
    pub fn new(handler: H) -> Self {
        Consumer {
            handler,
            topic: PhantomData,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

impl<T: Topic, H: TopicHandler<T>> Handler for Consumer<T, H> {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        if delivery.topic != T::KEY {
            return Outcome::Reject(
                Failure::new(format!(
                    "delivered on topic {:?} to a consumer of {:?}",
                    delivery.topic,
                    T::KEY
                ))
                .with_detail("kind", "wrong-topic"),
            );
        }
        let message = match json::from_slice::<T::Message>(&delivery.payload) {
            Ok(m) => m,
            Err(e) => {
                let name = <T::Message as Contract>::FULL_NAME;
                return Outcome::Reject(
                    Failure::new(format!("payload does not decode as {name}: {e}"))
                        .with_detail("kind", "decode")
                        .with_detail("message", name)
                        .with_detail("path", e.path_string())
                        .with_detail("offset", e.offset().to_string()),
                );
            }
        };
        match self.handler.handle(message, delivery).await {
            Ok(Handled::Ack) => Outcome::Ack,
            Ok(Handled::Postpone(delay)) => Outcome::Postpone(delay),
            Err(e) if e.retryable => Outcome::Nack(e.failure),
            Err(e) => Outcome::Reject(e.failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportErrorKind;

    #[derive(Debug)]
    struct Wrapped(TransportError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "while loading the batch: {}", self.0)
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn unclassified_errors_are_permanent_unless_caused_by_a_retryable_transport_error() {
        let parse: HandlerError = "x".parse::<i32>().unwrap_err().into();
        assert!(!parse.is_retryable());
        let lost: HandlerError =
            Wrapped(TransportError::new(TransportErrorKind::Connection, "reset")).into();
        assert!(lost.is_retryable());
        assert_eq!(lost.failure().reason, "while loading the batch: reset");
        let invalid: HandlerError =
            TransportError::new(TransportErrorKind::Invalid, "no such topic").into();
        assert!(!invalid.is_retryable());
    }
}
