"""The generated topic registries: every key of the contract, its message class, typed helpers."""

from __future__ import annotations

import pytest

from keyway import Client, Producer, topics
from keyway.orchestrator import topics as otopics
from keyway.orchestrator.v1.messages_pb2 import BatchRef, LogEvent, Parked
from keyway.runway.messagequeue_pb2 import MergeRequest, MergeResult


def test_every_key_carries_its_message() -> None:
    assert {k: t.message for k, t in topics.TOPICS.items()} == {
        "merge-conflict-check": MergeRequest,
        "runway-merge": MergeRequest,
        "merge-conflict-check-signal": MergeResult,
        "merge-signal": MergeResult,
    }
    assert topics.MESSAGES["merge-signal"] == "keyway.runway.messagequeue.MergeResult"
    assert {k: t.message for k, t in otopics.TOPICS.items()} == {
        "submitqueue-merge": BatchRef, "conclude": BatchRef, "speculate": BatchRef, "log": LogEvent,
        "parked": Parked,
    }
    assert topics.RUNWAY_MERGE.dead_letters.key == "runway-merge_dlq"
    assert topics.RUNWAY_MERGE.full_name == "keyway.runway.messagequeue.MergeRequest"


def test_an_unknown_key_names_the_valid_ones() -> None:
    assert topics.topic("merge-signal") is topics.MERGE_SIGNAL
    with pytest.raises(KeyError, match="no topic key 'merge' in this contract \\(valid: merge-conflict-check, "):
        topics.topic("merge")


async def test_helpers_are_bound_to_their_topic(client: Client) -> None:
    p = topics.merge_signal_producer(client)
    assert isinstance(p, Producer) and p.topic is topics.MERGE_SIGNAL
    c = otopics.conclude_consumer(client, "watch", lambda m, d: None)  # type: ignore[arg-type,return-value]
    assert c.topic is otopics.CONCLUDE and c.group == "watch" and c.streams == ["conclude"]
