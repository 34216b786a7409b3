"""The client on a Redis Cluster (3 masters, 3 replicas) that `tests/clients_python.rs` starts
and names in ``KEYWAY_TEST_CLUSTER`` (``host:port`` of one node); skipped, saying so, without
it. Each stream is its own slot there, so a message published with an ack goes out in the
settle script only when it is for the group's own stream, and before the ack otherwise."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from keyway import ACK, Client, Delivery, Retry, topics
from keyway.runway.messagequeue_pb2 import MergeRequest, MergeResult
from test_queue import consume_until

NODE = os.environ.get("KEYWAY_TEST_CLUSTER")
pytestmark = pytest.mark.skipif(NODE is None, reason="KEYWAY_TEST_CLUSTER is set by tests/clients_python.rs")
_prefixes = iter(range(1_000_000))


@pytest.fixture
async def cluster_client() -> AsyncIterator[Client]:
    assert NODE is not None
    host, port = NODE.rsplit(":", 1)
    redis = aioredis.RedisCluster(host=host, port=int(port))
    try:
        # A key prefix per test: the cluster outlives the test.
        yield Client(redis, key_prefix=f"py{os.getpid()}-{next(_prefixes)}", trim_interval=0.05, shutdown_deadline=1.0)
    finally:
        await redis.aclose()


async def stream_ids(client: Client, topic: str) -> list[str]:
    return [s.id for s in await client.peek(topic)]


async def test_publishing_with_the_ack_on_a_cluster_in_the_groups_slot_and_in_another(cluster_client: Client) -> None:
    client = cluster_client
    requests = topics.runway_merge_producer(client)
    signals = topics.merge_signal_producer(client)
    for i in (1, 2, 3):
        await requests.publish(MergeRequest(id=f"r-{i}"), id=f"r-{i}", partition_key="k")
    seen: list[tuple[str, int]] = []

    async def handle(m: MergeRequest, d: Delivery) -> Any:
        seen.append((d.id, d.attempt))
        if d.id == "r-1" and d.attempt == 1:
            await signals.publish_on_ack(d, MergeResult(id="s-1"), id="s-1", partition_key="s")
            return Retry("not yet")
        if d.id == "r-1":
            # Another stream: another slot, published before the ack.
            await signals.publish_on_ack(d, MergeResult(id="s-1"), id="s-1", partition_key="s")
            await signals.publish_on_ack(d, MergeResult(id="s-2"), id="s-2", partition_key="s")
        elif d.id == "r-2":
            # The group's own stream: in the settle script.
            await requests.publish_on_ack(d, MergeRequest(id="echo"), id="echo", partition_key="e")
        return ACK

    await consume_until(client, handle, lambda: ("r-3", 1) in seen and ("echo", 1) in seen, timeout=20)
    assert await stream_ids(client, "merge-signal") == ["s-1", "s-2"]
    assert [i for i, _ in seen].count("echo") == 1
    assert [a for i, a in seen if i == "r-1"] == [1, 2]
