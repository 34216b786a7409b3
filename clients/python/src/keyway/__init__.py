"""Keyway from Python: publish to and consume from Keyway queues on Redis Streams.

The queue's wire protocol is ``docs/wire-protocol.md`` in the Keyway repository; this package
runs the same Lua scripts as the Rust runtime, so a message published here is consumed there
(and back) with the same ordering, retries and dead letters.

The contract's messages are generated classes (``keyway.runway.messagequeue_pb2``,
``keyway.orchestrator.v1.messages_pb2``, ...) and the topic registries are
``keyway.topics`` (the runway contract) and ``keyway.orchestrator.topics``.
"""

from ._client import (
    ACK,
    Ack,
    Backoff,
    Client,
    Consumer,
    Delivery,
    Failure,
    LeaseLost,
    Outcome,
    Postpone,
    Producer,
    Receipt,
    Reject,
    Retry,
    Stored,
    Subscription,
    Topic,
    is_retryable,
)
from ._protocol import PROTOCOL_VERSION, ProtocolVersionError, Registry, bucket_of, fnv1a64

__all__ = [
    "ACK",
    "PROTOCOL_VERSION",
    "Ack",
    "Backoff",
    "Client",
    "Consumer",
    "Delivery",
    "Failure",
    "LeaseLost",
    "Outcome",
    "Postpone",
    "Producer",
    "ProtocolVersionError",
    "Receipt",
    "Registry",
    "Reject",
    "Retry",
    "Stored",
    "Subscription",
    "Topic",
    "bucket_of",
    "fnv1a64",
    "is_retryable",
]
