"""Submitting work to the merge service: the records and the hand-over, as `keyway submit`
writes them."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from keyway import Client, Delivery, Receipt
from keyway import merge
from keyway.orchestrator import topics as otopics
from keyway.orchestrator.v1.messages_pb2 import (
    BATCH_STATE_MERGING,
    LAND_STRATEGY_PROMOTE,
    LAND_STRATEGY_REBASE,
    BatchRef,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
GOOD = f"file:///srv/pay.git/refs%2Fheads%2Fx/{SHA}"
OTHER = f"git://git.example.com/pay/refs%2Fheads%2Fx/{SHA}"


def test_submissions_are_checked_up_front_with_the_services_words() -> None:
    merge.check("payments", [merge.NewRequest([GOOD, GOOD], LAND_STRATEGY_REBASE)])
    cases = [
        ("", [merge.NewRequest([GOOD])], "queue '': expected"),
        ("a/b", [merge.NewRequest([GOOD])], "queue 'a/b'"),
        ("q", [], "at least one request"),
        ("q", [merge.NewRequest([])], "request 1: no change URIs"),
        ("q", [merge.NewRequest([GOOD]), merge.NewRequest([GOOD, "nope"])], "request 2, URI 2: nope: not a URI"),
        ("q", [merge.NewRequest([GOOD]), merge.NewRequest([OTHER])], "request 2, URI 1: git://git.example.com/pay/"),
        ("q", [merge.NewRequest([GOOD, GOOD], LAND_STRATEGY_PROMOTE)],
         "request 1: promote needs a batch of exactly one request with one URI"),
        ("q", [merge.NewRequest(["https://h/r/refs%2Fheads%2Fx/" + SHA])], "unsupported scheme `https://`"),
        ("q", [merge.NewRequest(["git://h/r/refs%2Fheads%2Fx/0123"])], "is not a 40-hex lowercase commit sha"),
        ("q", [merge.NewRequest([f"git://h/r/main/{SHA}"])], "is not fully qualified"),
        ("q", [merge.NewRequest([f"git://h/r/refs%2Fheads%2Fa..b/{SHA}"])], "is not a valid ref name"),
        ("q", [merge.NewRequest([f"git://h:99999/r/refs%2Fheads%2Fx/{SHA}"])], "`99999` is not a port"),
    ]
    for queue, requests, says in cases:
        with pytest.raises(merge.SubmitError) as e:
            merge.check(queue, requests)
        assert says in str(e.value), (says, str(e.value))


async def test_submit_records_the_batch_and_hands_it_over(client: Client, redis: aioredis.Redis) -> None:
    batch = await merge.submit(client, "payments", [merge.NewRequest([GOOD], LAND_STRATEGY_REBASE),
                                                   merge.NewRequest([GOOD])])
    assert batch.id == "payments/batch/1"
    assert list(batch.contains) == ["payments/1", "payments/2"]
    raw = await redis.hgetall("kw:st:{payments}:batch:payments/batch/1")
    assert raw[b"v"] == b"1" and raw[b"s"] == b"BATCH_STATE_MERGING"
    assert json.loads(raw[b"d"]) == {
        "id": "payments/batch/1", "queue": "payments", "contains": ["payments/1", "payments/2"],
        "state": "BATCH_STATE_MERGING", "version": "1",
    }
    req = json.loads(await redis.hget("kw:st:{payments}:request:payments/1", "d"))
    assert req == {"id": "payments/1", "queue": "payments", "uris": [GOOD], "strategy": "LAND_STRATEGY_REBASE",
                   "state": "REQUEST_STATE_QUEUED", "version": "1"}
    assert await redis.smembers("kw:st:{payments}:batchs:BATCH_STATE_MERGING") == {b"payments/batch/1"}
    assert await redis.smembers("kw:st:{payments}:requests:REQUEST_STATE_QUEUED") == {b"payments/1", b"payments/2"}
    assert await redis.smembers("kw:st:queues") == {b"payments"}

    [stored] = await client.peek("submitqueue-merge")
    assert (stored.id, stored.partition_key) == ("payments/batch/1/merge", "payments")
    assert stored.payload == b'{"id":"payments/batch/1","queue":"payments","contains":["payments/1","payments/2"]}'
    assert await merge.hand_over(client, batch) is Receipt.DUPLICATE, "a repeated hand-over is dropped"

    status = await merge.status(client, batch.id)
    assert status is not None and status.state == "BATCH_STATE_MERGING" and not status.done
    assert [r.id for r in status.requests] == ["payments/1", "payments/2"]
    assert status.batch.state == BATCH_STATE_MERGING
    assert await merge.status(client, "payments/batch/9") is None

    second = await merge.submit(client, "payments", [merge.NewRequest([GOOD])])
    assert (second.id, list(second.contains)) == ("payments/batch/2", ["payments/3"])


async def test_the_hand_over_is_what_the_merge_stage_consumes(client: Client) -> None:
    await merge.submit(client, "q1", [merge.NewRequest([GOOD])])
    got: list[BatchRef] = []

    async def handle(ref: BatchRef, d: Delivery) -> None:
        got.append(ref)

    from test_queue import consume_until

    await consume_until(client, handle, lambda: bool(got), topic=otopics.SUBMITQUEUE_MERGE, group="orchestrator")
    assert (got[0].id, got[0].queue) == ("q1/batch/1", "q1")
