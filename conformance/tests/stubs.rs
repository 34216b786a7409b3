//! Generated producer and consumer stubs, through the in-process backend: every contract topic
//! round-trips, a payload that does not decode is dead-lettered without reaching the handler,
//! and what a handler publishes with its ack goes out only when it acks.

use std::sync::Mutex;
use std::time::Duration;

use keyway::runway::messagequeue::{MergeRequest, MergeResult};
use keyway::topics::{
    MergeConflictCheck, MergeConflictCheckSignal, MergeSignal, RunwayMerge, RunwayMergeConsumer,
    RunwayMergeProducer, TopicKey,
};
use keyway_conformance::in_process::{metadata, InProcess};
use keyway_conformance::vectors;
use keyway_runtime::json;
use keyway_runtime::stub::{Consumer, Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::topic::{Contract, Topic};
use keyway_runtime::transport::{
    Delivery, MessageId, Outcome, OutgoingMessage, PublishReceipt, Publisher,
};

/// Records what it was given and answers with a fixed result.
struct Recorder<M> {
    seen: Mutex<Vec<(M, String, String, u32)>>,
    answer: fn(u32) -> Result<Handled, HandlerError>,
}

impl<M> Recorder<M> {
    fn new(answer: fn(u32) -> Result<Handled, HandlerError>) -> Self {
        Recorder {
            seen: Mutex::new(Vec::new()),
            answer,
        }
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl<T: Topic> TopicHandler<T> for Recorder<T::Message> {
    async fn handle(&self, message: T::Message, d: &Delivery) -> Result<Handled, HandlerError> {
        if d.metadata.contains_key("slow") {
            d.extend_visibility(Duration::from_secs(30)).await?;
        }
        self.seen
            .lock()
            .unwrap()
            .push((message, d.id.clone(), d.partition_key.clone(), d.attempt));
        (self.answer)(d.attempt)
    }
}

fn ack(_: u32) -> Result<Handled, HandlerError> {
    Ok(Handled::Ack)
}

/// The full golden vector of the message `T` carries.
fn sample<T: Topic>() -> T::Message {
    let name = <T::Message as Contract>::FULL_NAME;
    let v = vectors()
        .unwrap()
        .into_iter()
        .filter(|v| v.message == name)
        .max_by_key(|v| v.json.len())
        .expect("a vector for every payload message");
    json::from_slice(&v.json).unwrap()
}

async fn round_trip<T: Topic>()
where
    T::Message: PartialEq + std::fmt::Debug + Clone,
{
    let backend = InProcess::new(3);
    let producer = Producer::<T, _>::new(&backend);
    let message = sample::<T>();
    let id = MessageId::intent("payments/batch/7", &["merged"]).unwrap();
    let receipt = producer
        .publish(
            &message,
            id.clone(),
            "payments",
            metadata([("trace", "t-1")]),
        )
        .await
        .unwrap();
    assert_eq!(receipt, PublishReceipt::Published);
    assert_eq!(backend.pending(T::KEY), 1, "published on the topic's key");

    let consumer = Consumer::<T, _>::new(Recorder::<T::Message>::new(ack));
    let (outcome, _) = backend.deliver_next(T::KEY, &consumer).await.unwrap();
    assert_eq!(outcome, Outcome::Ack);
    let seen = consumer.handler().seen.lock().unwrap();
    assert_eq!(
        seen.as_slice(),
        [(message, id.to_string(), "payments".to_owned(), 1)]
    );
}

#[tokio::test]
async fn every_contract_topic_round_trips() {
    round_trip::<MergeConflictCheck>().await;
    round_trip::<RunwayMerge>().await;
    round_trip::<MergeConflictCheckSignal>().await;
    round_trip::<MergeSignal>().await;
    assert_eq!(TopicKey::ALL.len(), 4, "a new key needs a round trip above");
}

#[tokio::test]
async fn publishing_is_idempotent_on_topic_partition_key_and_id() {
    let backend = InProcess::new(3);
    let producer = RunwayMergeProducer::new(&backend);
    let request = MergeRequest {
        id: "payments/batch/1".into(),
        ..Default::default()
    };
    let id = MessageId::new("payments/batch/1").unwrap();
    let publish = |pk: &'static str| producer.publish(&request, id.clone(), pk, Default::default());
    assert_eq!(
        publish("payments").await.unwrap(),
        PublishReceipt::Published
    );
    assert_eq!(
        publish("payments").await.unwrap(),
        PublishReceipt::Duplicate
    );
    assert_eq!(publish("other").await.unwrap(), PublishReceipt::Published);
    assert_eq!(backend.pending("runway-merge"), 2);
}

#[tokio::test]
async fn a_poison_payload_is_dead_lettered_and_never_reaches_the_handler() {
    let backend = InProcess::new(3);
    let poison = br#"{"id":"payments/batch/9","steps":[{"change":{"uris":[42]}}]}"#;
    backend
        .publish(
            RunwayMerge::KEY,
            OutgoingMessage {
                id: MessageId::new("payments/batch/9").unwrap(),
                partition_key: "payments".into(),
                payload: poison.to_vec(),
                metadata: metadata([("trace", "t-9")]),
            },
        )
        .await
        .unwrap();
    let consumer = RunwayMergeConsumer::new(Recorder::<MergeRequest>::new(ack));
    let (outcome, _) = backend
        .deliver_next("runway-merge", &consumer)
        .await
        .unwrap();

    assert_eq!(
        consumer.handler().calls(),
        0,
        "the handler never sees a poison payload"
    );
    let Outcome::Reject(failure) = outcome else {
        panic!("expected a reject, got {outcome:?}")
    };
    assert!(failure.reason.starts_with(
        "payload does not decode as keyway.runway.messagequeue.MergeRequest: steps[0].change.uris[0]: expected a string, found a number"
    ), "{}", failure.reason);
    assert_eq!(failure.detail["kind"], "decode");
    assert_eq!(failure.detail["path"], "steps[0].change.uris[0]");

    let dead = backend.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].message.payload, poison,
        "the payload is kept as it was"
    );
    assert_eq!(dead[0].message.metadata["trace"], "t-9");
    assert_eq!(dead[0].failure, failure);
    assert_eq!(backend.pending("runway-merge"), 0);
}

#[tokio::test]
async fn handler_errors_are_retried_or_dead_lettered_by_class() {
    let backend = InProcess::new(2);
    let producer = Producer::<MergeSignal, _>::new(&backend);
    let result = MergeResult {
        id: "payments/batch/3".into(),
        ..Default::default()
    };
    producer
        .publish(
            &result,
            MessageId::new("payments/batch/3").unwrap(),
            "payments",
            Default::default(),
        )
        .await
        .unwrap();
    let flaky = Consumer::<MergeSignal, _>::new(Recorder::<MergeResult>::new(|_| {
        Err(HandlerError::retryable("version conflict"))
    }));
    let (first, _) = backend.deliver_next("merge-signal", &flaky).await.unwrap();
    assert!(matches!(first, Outcome::Nack(ref f) if f.reason == "version conflict"));
    let (second, _) = backend.deliver_next("merge-signal", &flaky).await.unwrap();
    assert!(matches!(second, Outcome::Nack(_)));
    let attempts: Vec<u32> = flaky
        .handler()
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.3)
        .collect();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(
        backend.dead_letters()[0].attempts,
        2,
        "dead-lettered at max attempts"
    );

    producer
        .publish(
            &result,
            MessageId::new("payments/batch/4").unwrap(),
            "payments",
            Default::default(),
        )
        .await
        .unwrap();
    let broken = Consumer::<MergeSignal, _>::new(Recorder::<MergeResult>::new(|_| {
        Err("not a number".parse::<u8>().unwrap_err().into())
    }));
    let (outcome, _) = backend.deliver_next("merge-signal", &broken).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Reject(_)),
        "unclassified errors are not retried"
    );
    assert_eq!(backend.dead_letters().len(), 2);
}

#[tokio::test]
async fn postpone_redelivers_without_counting_an_attempt() {
    let backend = InProcess::new(3);
    Producer::<MergeSignal, _>::new(&backend)
        .publish(
            &MergeResult::default(),
            MessageId::new("payments/batch/5").unwrap(),
            "payments",
            Default::default(),
        )
        .await
        .unwrap();
    let later = Consumer::<MergeSignal, _>::new(Recorder::<MergeResult>::new(|attempt| {
        assert_eq!(attempt, 1);
        Ok(Handled::Postpone(Duration::from_secs(5)))
    }));
    for _ in 0..3 {
        let (outcome, _) = backend.deliver_next("merge-signal", &later).await.unwrap();
        assert_eq!(outcome, Outcome::Postpone(Duration::from_secs(5)));
    }
    assert!(backend.dead_letters().is_empty());
}

#[tokio::test]
async fn handlers_can_extend_visibility_and_wrong_topics_are_rejected() {
    let backend = InProcess::new(3);
    let message = sample::<RunwayMerge>();
    for (topic, id) in [("runway-merge", "a"), ("merge-conflict-check", "b")] {
        backend
            .publish(
                topic,
                OutgoingMessage {
                    id: MessageId::new(id).unwrap(),
                    partition_key: "payments".into(),
                    payload: json::to_vec(&message).unwrap(),
                    metadata: metadata([("slow", "yes")]),
                },
            )
            .await
            .unwrap();
    }
    let consumer = RunwayMergeConsumer::new(Recorder::<MergeRequest>::new(ack));
    let (outcome, lease) = backend
        .deliver_next("runway-merge", &consumer)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Ack);
    assert_eq!(lease.extensions(), 1);
    // A backend that routes a delivery to the wrong consumer gets a reject, not a handler call.
    let (outcome, _) = backend
        .deliver_next("merge-conflict-check", &consumer)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Reject(ref f) if f.detail["kind"] == "wrong-topic"));
    assert_eq!(consumer.handler().calls(), 1);
}

/// Answers each request on `merge-signal` with its ack, then fails its first attempt.
struct Answering;

impl TopicHandler<RunwayMerge> for Answering {
    async fn handle(&self, request: MergeRequest, d: &Delivery) -> Result<Handled, HandlerError> {
        let answer = MergeResult {
            id: request.id.clone(),
            ..Default::default()
        };
        Producer::<MergeSignal, _>::new(&NoPublisher)
            .publish_on_ack(
                d,
                &answer,
                MessageId::new(format!("{}/answer", request.id))?,
                &d.partition_key,
                metadata([("attempt", d.attempt.to_string().as_str())]),
            )
            .await?;
        if d.attempt == 1 {
            return Err(HandlerError::retryable("not yet"));
        }
        Ok(Handled::Ack)
    }
}

/// A publisher that is never called: the producer above only stages on the delivery.
struct NoPublisher;

impl Publisher for NoPublisher {
    async fn publish(
        &self,
        _: &str,
        _: OutgoingMessage,
    ) -> Result<PublishReceipt, keyway_runtime::transport::TransportError> {
        panic!("publish_on_ack went to the producer's publisher")
    }
}

#[tokio::test]
async fn a_typed_producer_publishes_with_the_ack_and_only_with_it() {
    let backend = InProcess::new(3);
    let request = MergeRequest {
        id: "payments/batch/5".into(),
        ..Default::default()
    };
    RunwayMergeProducer::new(&backend)
        .publish(
            &request,
            MessageId::new("payments/batch/5").unwrap(),
            "payments",
            Default::default(),
        )
        .await
        .unwrap();
    let consumer = RunwayMergeConsumer::new(Answering);
    let (first, _) = backend
        .deliver_next("runway-merge", &consumer)
        .await
        .unwrap();
    assert!(matches!(first, Outcome::Nack(_)));
    assert_eq!(
        backend.pending("merge-signal"),
        0,
        "a nacked attempt publishes nothing"
    );
    let (second, _) = backend
        .deliver_next("runway-merge", &consumer)
        .await
        .unwrap();
    assert_eq!(second, Outcome::Ack);
    let signals = Consumer::<MergeSignal, _>::new(Recorder::<MergeResult>::new(ack));
    let (outcome, _) = backend
        .deliver_next("merge-signal", &signals)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Ack);
    let seen = signals.handler().seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.id, "payments/batch/5");
    assert_eq!(seen[0].1, "payments/batch/5/answer");
    assert_eq!(seen[0].2, "payments");
    assert_eq!(backend.pending("merge-signal"), 0);
}
