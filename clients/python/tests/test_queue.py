"""Publishing and consuming on a real redis-server: dedup, per-key order, every outcome, dead
letters in the shape the scripts (and the Rust runtime) write them, protocol versions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import REPO
from keyway import (
    ACK,
    Backoff,
    Client,
    Delivery,
    Postpone,
    ProtocolVersionError,
    Receipt,
    Registry,
    Reject,
    Retry,
    Subscription,
    bucket_of,
    topics,
)
from keyway.runway.messagequeue_pb2 import MergeRequest, MergeResult

FAST = Subscription(batch_size=4, visibility_timeout=5.0, max_attempts=3, backoff=Backoff(0.01, 1.0, 0.01))


def request(i: int, queue: str = "q") -> MergeRequest:
    return MergeRequest(id=f"{queue}/batch/{i}", queue_name=queue)


async def consume_until(
    client: Client,
    handler: Callable[[Any, Delivery], Awaitable[Any]],
    done: Callable[[], bool],
    *,
    group: str = "g",
    topic: Any = topics.RUNWAY_MERGE,
    subscription: Subscription = FAST,
    timeout: float = 10.0,
) -> None:
    """Run a consumer until ``done()`` holds (checked after each delivery and every 20 ms)."""
    stop = asyncio.Event()

    async def watch() -> None:
        while not done():
            await asyncio.sleep(0.02)
        stop.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(client.consumer(topic, group, handler, subscription).run(stop), timeout)
    finally:
        watcher.cancel()


async def entries(redis: aioredis.Redis, key: str) -> list[tuple[str, list[tuple[bytes, bytes]]]]:
    raw = await redis.execute_command("XRANGE", key, "-", "+")
    out = []
    for entry_id, fields in raw:
        flat = [x for kv in fields.items() for x in kv] if isinstance(fields, dict) else list(fields)
        out.append((entry_id.decode(), [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]))
    return out


async def test_publish_writes_the_entry_once_per_id_and_partition_key(client: Client, redis: aioredis.Redis) -> None:
    p = topics.runway_merge_producer(client)
    meta = {"trace": "t-1", "b": "2"}
    assert await p.publish(request(1), id="m/1", partition_key="q", metadata=meta) is Receipt.PUBLISHED
    assert await p.publish(request(1), id="m/1", partition_key="q") is Receipt.DUPLICATE
    assert await p.publish(request(1), id="m/1", partition_key="other") is Receipt.PUBLISHED
    assert await p.publish(request(2), id="m/2", partition_key="q") is Receipt.PUBLISHED
    stored = await entries(redis, "kw:{runway-merge}:s:runway-merge")
    assert len(stored) == 3
    names = [name for name, _ in stored[0][1]]
    assert names[:4] == [b"id", b"pk", b"at", b"payload"]
    assert names[-2:] == [b"m:trace", b"m:b"], "metadata in the order given"
    fields = dict(stored[0][1])
    assert fields[b"id"] == b"m/1" and fields[b"pk"] == b"q"
    assert fields[b"payload"] == b'{"id":"q/batch/1","queue_name":"q"}'
    # The server's clock, read by the script just before its XADD: the entry id's milliseconds
    # are the same or, when the clock ticked in between, one more.
    assert 0 <= int(stored[0][0].split("-")[0]) - int(fields[b"at"]) <= 1, "the server's time"
    assert fields.get(b"v", b"1") == b"1"
    ttl = await redis.pttl("kw:{runway-merge}:d:runway-merge:1:q:m/1")
    assert 0 < ttl <= 24 * 3600 * 1000
    with pytest.raises(TypeError, match="carries keyway.runway.messagequeue.MergeRequest, not MergeResult"):
        await p.publish(MergeResult(), id="x", partition_key="q")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        await p.publish(request(1), id="", partition_key="q")


async def test_buckets_follow_fnv1a_of_the_partition_key(redis: aioredis.Redis) -> None:
    client = Client(redis, registry=Registry({"runway-merge": "rm"}, buckets={"runway-merge": 4}))
    p = client.producer(topics.RUNWAY_MERGE)
    for pk in ("a", "b", "c", "d", "e"):
        await p.publish(request(1), id="m", partition_key=pk)
    for pk in ("a", "b", "c", "d", "e"):
        key = f"kw:{{rm#{bucket_of(pk, 4)}}}:s:rm#{bucket_of(pk, 4)}"
        assert any(dict(f)[b"pk"] == pk.encode() for _, f in await entries(redis, key)), (pk, key)
    assert bucket_of("a", 4) == 0
    got: list[str] = []

    async def handle(m: MergeRequest, d: Delivery) -> None:
        got.append(d.partition_key)

    await consume_until(client, handle, lambda: len(got) == 5)
    assert sorted(got) == ["a", "b", "c", "d", "e"]


async def test_one_key_at_a_time_in_publish_order_across_consumers(client: Client) -> None:
    p = topics.runway_merge_producer(client)
    for i in range(12):
        await p.publish(request(i), id=f"m/{i}", partition_key=f"k{i % 3}")
    seen: dict[str, list[int]] = {}
    active: set[str] = set()
    overlaps: list[str] = []

    async def handle(m: MergeRequest, d: Delivery) -> None:
        if d.partition_key in active:
            overlaps.append(d.partition_key)
        active.add(d.partition_key)
        await asyncio.sleep(0.01)
        seen.setdefault(d.partition_key, []).append(int(m.id.rsplit("/", 1)[1]))
        active.discard(d.partition_key)

    def done() -> bool:
        return sum(map(len, seen.values())) == 12

    await asyncio.gather(consume_until(client, handle, done), consume_until(client, handle, done))
    assert overlaps == []
    assert seen == {f"k{k}": [i for i in range(12) if i % 3 == k] for k in range(3)}


async def test_a_visibility_timeout_hands_a_stuck_delivery_to_another_consumer(
    client: Client, redis: aioredis.Redis
) -> None:
    await topics.runway_merge_producer(client).publish(request(1), id="m/1", partition_key="q")
    sub = Subscription(batch_size=4, visibility_timeout=0.2, max_attempts=3, backoff=Backoff(0.01, 1.0, 0.01))
    attempts: list[int] = []
    stuck = asyncio.Event()

    async def slow(m: MergeRequest, d: Delivery) -> None:
        attempts.append(d.attempt)
        if d.attempt == 1:
            await stuck.wait()

    async def quick(m: MergeRequest, d: Delivery) -> None:
        attempts.append(d.attempt)

    stop_slow = asyncio.Event()
    first = asyncio.create_task(client.consumer(topics.RUNWAY_MERGE, "g", slow, sub).run(stop_slow))
    for _ in range(500):
        if attempts:
            break
        await asyncio.sleep(0.01)
    assert attempts == [1]
    # The second consumer's claims scan for the expired entry when the first scan said it would
    # expire, and hand it over as attempt 2; the stuck one's late settle is refused.
    await consume_until(client, quick, lambda: len(attempts) == 2, subscription=sub)
    stuck.set()
    stop_slow.set()
    await asyncio.wait_for(first, 10)
    assert attempts == [1, 2]
    assert await redis.xlen("kw:{runway-merge}:s:runway-merge_dlq") == 0


async def test_a_handler_publishes_with_its_ack_and_only_with_it(client: Client, redis: aioredis.Redis) -> None:
    signals = topics.merge_signal_producer(client)
    await signals.publish(MergeResult(id="s-0"), id="s-0", partition_key="s")
    requests = topics.runway_merge_producer(client)
    for i in (1, 2, 3):
        await requests.publish(request(i), id=f"r-{i}", partition_key="k")
    seen: list[tuple[str, int]] = []
    refused: list[str] = []

    async def handle(m: MergeRequest, d: Delivery) -> Any:
        seen.append((d.id, d.attempt))
        if d.id == "r-1" and d.attempt == 1:
            await signals.publish_on_ack(d, MergeResult(id="s-1"), id="s-1", partition_key="s")
            return Retry("not yet")
        if d.id == "r-1":
            for sid in ("s-0", "s-1", "s-2"):
                await signals.publish_on_ack(d, MergeResult(id=sid), id=sid, partition_key="s", metadata={"by": d.id})
            try:
                await signals.publish_on_ack(d, m, id="x", partition_key="s")  # type: ignore[arg-type]
            except TypeError as e:
                refused.append(str(e))
            return ACK
        if d.id == "r-2":
            await signals.publish_on_ack(d, MergeResult(id="s-3"), id="s-3", partition_key="s")
            return Reject("no")
        return ACK

    # r-3 follows r-1 and r-2 on their key: once it is handled, they were settled for good.
    await consume_until(client, handle, lambda: ("r-3", 1) in seen)
    stored = await entries(redis, "kw:{merge-signal}:s:merge-signal")
    assert [dict(f)[b"id"] for _, f in stored] == [b"s-0", b"s-1", b"s-2"], (
        "the acked attempt's messages in order, the duplicate dropped, none of a retried or rejected attempt"
    )
    assert dict(stored[1][1])[b"m:by"] == b"r-1"
    assert [a for i, a in seen if i == "r-1"] == [1, 2]
    assert refused and "carries keyway.runway.messagequeue.MergeResult" in refused[0]


async def test_retry_counts_attempts_then_dead_letters_with_the_reason(client: Client, redis: aioredis.Redis) -> None:
    await topics.runway_merge_producer(client).publish(request(1), id="m/1", partition_key="q", metadata={"t": "x"})
    attempts: list[int] = []

    async def handle(m: MergeRequest, d: Delivery) -> Any:
        attempts.append(d.attempt)
        raise Retry("downstream is down", kind="dependency")

    dlq = "kw:{runway-merge}:s:runway-merge_dlq"
    await consume_until(client, handle, lambda: len(attempts) >= 3)
    for _ in range(50):
        if await redis.xlen(dlq):
            break
        await asyncio.sleep(0.02)
    assert attempts == [1, 2, 3]
    [(_, fields)] = await entries(redis, dlq)
    d = dict(fields)
    assert d[b"m:dlq.failure_count"] == b"3"
    assert d[b"m:dlq.last_error"] == b"downstream is down"
    assert d[b"m:dlq.detail.kind"] == b"dependency"
    assert d[b"m:dlq.original_topic"] == b"runway-merge"
    assert d[b"m:t"] == b"x" and d[b"id"] == b"m/1"
    # The group owes nothing: its state is empty.
    for part in ("heads", "due", "held", "attempts", "errors", "pks"):
        assert not await redis.exists(f"kw:{{runway-merge}}:g:runway-merge:g:{part}"), part


DLQ_FIELDS = [b"m:dlq.original_topic", b"m:dlq.failure_count", b"m:dlq.last_error", b"m:dlq.failed_at",
              b"m:dlq.stream_entry"]


def documented_dead_letter_fields() -> list[bytes]:
    doc = (REPO / "docs/wire-protocol.md").read_text()
    section = doc.split("## 7. Dead letters", 1)[1].split("\n## ", 1)[0]
    return [f.encode() for f in re.findall(r"^\| `(m:dlq\.[a-z_]+)` \|", section, re.M)]


async def test_a_rejection_dead_letters_at_once_in_the_documented_shape(client: Client, redis: aioredis.Redis) -> None:
    if (REPO / "docs/wire-protocol.md").exists():
        assert documented_dead_letter_fields() == DLQ_FIELDS
    p = topics.runway_merge_producer(client)
    await p.publish(request(1), id="m/1", partition_key="q", metadata={"a": "1"})
    await p.publish(request(2), id="m/2", partition_key="q")
    handled: list[str] = []

    async def handle(m: MergeRequest, d: Delivery) -> Any:
        handled.append(d.id)
        if d.id == "m/1":
            return Reject("no such queue: " + "é" * 700, path="steps[0]")
        return ACK

    await consume_until(client, handle, lambda: len(handled) == 2)
    assert handled == ["m/1", "m/2"], "the key's next entry follows the rejected one"
    original = await entries(redis, "kw:{runway-merge}:s:runway-merge")
    [(_, fields)] = await entries(redis, "kw:{runway-merge}:s:runway-merge_dlq")
    names = [n for n, _ in fields]
    copied = [n for n in names if not n.startswith(b"m:dlq.")]
    assert copied == [n for n, _ in original[0][1]] if original else copied[:4] == [b"id", b"pk", b"at", b"payload"]
    assert [n for n in names if n.startswith(b"m:dlq.")] == DLQ_FIELDS + [b"m:dlq.detail.path"]
    d = dict(fields)
    assert d[b"m:dlq.failure_count"] == b"1"
    reason = d[b"m:dlq.last_error"]
    assert len(reason) <= 1024 and reason.endswith(f"… [cut from {len('no such queue: ') + 1400} bytes]".encode())
    reason.decode("utf-8")  # cut on a character boundary
    assert re.fullmatch(rb"\d+-\d+", d[b"m:dlq.stream_entry"])
    assert int(d[b"m:dlq.failed_at"]) >= int(d[b"at"])


async def test_postpone_is_not_an_attempt_and_holds_the_key(client: Client) -> None:
    p = topics.runway_merge_producer(client)
    await p.publish(request(1), id="m/1", partition_key="q")
    await p.publish(request(2), id="m/2", partition_key="q")
    log: list[tuple[str, int]] = []

    async def handle(m: MergeRequest, d: Delivery) -> Any:
        log.append((d.id, d.attempt))
        if d.id == "m/1" and len(log) < 3:
            return Postpone(0.05)
        return None

    await consume_until(client, handle, lambda: len(log) == 4)
    assert log == [("m/1", 1), ("m/1", 1), ("m/1", 1), ("m/2", 1)]


async def test_undecodable_and_malformed_entries_never_reach_the_handler(client: Client, redis: aioredis.Redis) -> None:
    key = "kw:{runway-merge}:s:runway-merge"
    await client.run_script("publish", [key, "kw:{runway-merge}:d:runway-merge:1:q:bad"],
                            [60000, "bad", "q", b'{"id": 5'])
    await client.run_script("publish", [key, "kw:{runway-merge}:d:runway-merge:1:q:typed"],
                            [60000, "typed", "q", b'{"steps": "nope"}'])
    malformed = await redis.xadd(key, {b"pk": b"q", b"payload": b"{}", b"m:\xff": b"x"})
    calls: list[str] = []

    async def handle(m: MergeRequest, d: Delivery) -> None:
        calls.append(d.id)

    dlq = key + "_dlq"

    async def three() -> bool:
        return await redis.xlen(dlq) == 3

    stop_after: list[bool] = []

    async def poll() -> None:
        while not await three():
            await asyncio.sleep(0.02)
        stop_after.append(True)

    poller = asyncio.create_task(poll())
    await consume_until(client, handle, lambda: bool(stop_after))
    await poller
    assert calls == []
    dead = {dict(f)[b"id"]: dict(f) for _, f in await entries(redis, dlq)}
    bad = dead[b"bad"]
    assert bad[b"m:dlq.last_error"].startswith(b"payload does not decode as keyway.runway.messagequeue.MergeRequest: ")
    assert bad[b"m:dlq.detail.kind"] == b"decode"
    assert bad[b"m:dlq.detail.message"] == b"keyway.runway.messagequeue.MergeRequest"
    assert bad[b"m:dlq.detail.offset"] == b"8"
    assert dead[b"typed"][b"m:dlq.detail.kind"] == b"decode"
    m = dead[f"malformed:{malformed.decode()}".encode()]
    assert m[b"pk"] == b"" and m[b"at"] == b"0" and m[b"payload"] == b"" and m[b"m:dlq.malformed"] == b"1"
    assert m[b"raw:pk"] == b"q" and m[b"raw:m:\xff"] == b"x"
    assert m[b"m:dlq.last_error"] == (
        b"malformed stream entry: no `id` field; no `at` field; a metadata field name (`m:...`) is not UTF-8"
    )
    assert m[b"m:dlq.detail.kind"] == b"malformed"


async def test_handler_errors_are_classified_as_rust_classifies_them(client: Client, redis: aioredis.Redis) -> None:
    p = topics.runway_merge_producer(client)
    await p.publish(request(1), id="boom", partition_key="a")
    await p.publish(request(2), id="lost", partition_key="b")
    seen: list[tuple[str, int]] = []

    async def handle(m: MergeRequest, d: Delivery) -> None:
        seen.append((d.id, d.attempt))
        if d.id == "boom":
            raise RuntimeError("unexpected")
        if d.attempt == 1:
            raise aioredis.ConnectionError("connection reset")

    await consume_until(client, handle, lambda: len(seen) == 3)
    assert sorted(seen) == [("boom", 1), ("lost", 1), ("lost", 2)]
    [(_, fields)] = await entries(redis, "kw:{runway-merge}:s:runway-merge_dlq")
    assert dict(fields)[b"m:dlq.last_error"] == b"unexpected"


async def test_a_dead_letter_consumer_reads_the_dead_letters(client: Client) -> None:
    await topics.runway_merge_producer(client).publish(request(7), id="m/7", partition_key="q")

    rejected: list[str] = []

    async def reject(m: MergeRequest, d: Delivery) -> Any:
        rejected.append(d.id)
        return Reject("nope")

    dead: list[tuple[str, dict[str, str]]] = []

    async def collect(m: MergeRequest, d: Delivery) -> None:
        dead.append((m.id, d.metadata))

    await consume_until(client, reject, lambda: bool(rejected))
    await consume_until(client, collect, lambda: bool(dead), topic=topics.RUNWAY_MERGE.dead_letters,
                        group="reconcile", subscription=Subscription.dead_letter_consumer())
    [(mid, meta)] = dead
    assert mid == "q/batch/7"
    assert meta["dlq.last_error"] == "nope" and meta["dlq.original_topic"] == "runway-merge"


async def test_an_entry_of_another_protocol_version_is_refused(client: Client, redis: aioredis.Redis) -> None:
    key = "kw:{runway-merge}:s:runway-merge"
    await topics.runway_merge_producer(client).publish(request(1), id="m/1", partition_key="q")
    future = await redis.xadd(key, {b"id": b"m/2", b"pk": b"q", b"at": b"1", b"payload": b"{}", b"v": b"2"})

    async def handle(m: MergeRequest, d: Delivery) -> None:
        pass

    with pytest.raises(ProtocolVersionError, match=rf"entry {future.decode()} was written by protocol version 2; "
                       r"this client speaks version 1"):
        await asyncio.wait_for(client.consumer(topics.RUNWAY_MERGE, "g", handle, FAST).run(), 10)
    # A fresh client refuses the stream before publishing to it.
    with pytest.raises(ProtocolVersionError, match="protocol version 2"):
        await Client(redis).producer(topics.RUNWAY_MERGE).publish(request(3), id="m/3", partition_key="q")
    assert await redis.xlen(key + "_dlq") == 0, "a newer entry is not malformed"


async def test_acknowledged_entries_are_trimmed(client: Client, redis: aioredis.Redis) -> None:
    p = topics.runway_merge_producer(client)
    for i in range(5):
        await p.publish(request(i), id=f"m/{i}", partition_key=f"k{i}")
    await asyncio.sleep(0.01)
    await p.publish(request(9), id="m/9", partition_key="k9")
    n: list[int] = []

    async def handle(m: MergeRequest, d: Delivery) -> None:
        n.append(1)

    trimmed: list[bool] = []

    async def watch() -> None:
        while await redis.xlen("kw:{runway-merge}:s:runway-merge") > 1:
            await asyncio.sleep(0.02)
        trimmed.append(True)

    w = asyncio.create_task(watch())
    await consume_until(client, handle, lambda: bool(trimmed), timeout=5)
    await w
    assert len(n) == 6


async def test_settings_out_of_range_are_named(redis: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match=r"visibility_timeout: 0.001 s is out of range"):
        Subscription(visibility_timeout=0.001)
    with pytest.raises(ValueError, match=r"max_attempts: expected an integer from 1 to 1000000, found 0"):
        Subscription(max_attempts=0)
    with pytest.raises(ValueError, match="Postpone: the delay must be a finite number"):
        Postpone(-1)
    with pytest.raises(ValueError, match="decode_responses=False"):
        Client(aioredis.Redis(decode_responses=True))
    with pytest.raises(ValueError, match="consumer group 'Bad' is not a valid name"):
        Client(redis).consumer(topics.RUNWAY_MERGE, "Bad", lambda m, d: asyncio.sleep(0))
