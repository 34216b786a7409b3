"""Producers and consumers of Keyway topics on Redis Streams (``docs/wire-protocol.md``)."""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Union

import redis.asyncio as aioredis
from google.protobuf.message import Message
from redis import exceptions as rexc
from redis.crc import key_slot

from . import _codec
from ._protocol import (
    MAX_DELAY_MS,
    SUPPORTED_VERSIONS,
    GroupKeys,
    ProtocolVersionError,
    Registry,
    dedup_key,
    is_valid_topic_name,
    pairs,
    read_envelope,
    stream_key,
    version_of,
)
from ._scripts import GROUP_SCRIPTS, PLAIN_SCRIPTS, script

M = TypeVar("M", bound=Message)
log = logging.getLogger("keyway")

RedisClient = Union["aioredis.Redis", "aioredis.RedisCluster"]


@dataclass(frozen=True)
class Topic(Generic[M]):
    """A topic key and the message it carries. The generated ``topics`` modules hold one per key."""

    key: str
    message: type[M]

    def __post_init__(self) -> None:
        if not is_valid_topic_name(self.key):
            raise ValueError(f"topic key {self.key!r} is not a valid topic name ([a-z0-9_-]{{1,255}})")

    @property
    def full_name(self) -> str:
        """The full protobuf name of the message."""
        return str(self.message.DESCRIPTOR.full_name)

    @property
    def dead_letters(self) -> Topic[M]:
        """The dead-letter topic of this one: ``<key>_dlq``, carrying the same message."""
        return Topic(self.key + "_dlq", self.message)


class Receipt(enum.Enum):
    """What publishing did."""

    #: The message was stored.
    PUBLISHED = "published"
    #: The same (topic, partition key, id) was published before; nothing was written.
    DUPLICATE = "duplicate"


# Outcomes ------------------------------------------------------------------------------------


class Ack:
    """Done. Returning ``None`` from a handler means the same."""

    def __repr__(self) -> str:
        return "ACK"


ACK = Ack()


@dataclass(frozen=True)
class Postpone:
    """Not yet: deliver again after ``delay`` seconds, not counted as an attempt. Later
    messages of the same partition key wait behind it."""

    delay: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ValueError(f"Postpone: the delay must be a finite number of seconds >= 0, not {self.delay!r}")


class Failure(Exception):
    """A failed delivery: a reason and detail for the dead letter."""

    def __init__(self, reason: str, **detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail: dict[str, str] = dict(detail)


class Retry(Failure):
    """A failure worth retrying: delivered again after the backoff, counted as an attempt, and
    dead-lettered with this reason when the attempts run out. Raise or return it."""


class Reject(Failure):
    """A failure no retry can fix: dead-lettered at once. Raise or return it."""


Outcome = Union[Ack, Postpone, Retry, Reject, None]


# Settings ------------------------------------------------------------------------------------


def _check_seconds(what: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: expected a number of seconds, found {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what}: {value} s is out of range ({low} s to {high} s)")


def _check_count(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ValueError(f"{what}: expected an integer from 1 to 1000000, found {value!r}")


_DAY = 86_400.0


@dataclass(frozen=True)
class Backoff:
    """Delay before a retry: ``initial × multiplier^(attempt - 1)``, at most ``max`` (seconds)."""

    initial: float = 1.0
    multiplier: float = 2.0
    max: float = 30.0

    def __post_init__(self) -> None:
        _check_seconds("backoff.initial", self.initial, 0, _DAY)
        _check_seconds("backoff.max", self.max, 0, _DAY)
        if not (isinstance(self.multiplier, (int, float)) and 1.0 <= self.multiplier <= 100.0):
            raise ValueError(f"backoff.multiplier: {self.multiplier!r} is out of range (1..=100)")

    def delay(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` (1-based), in seconds."""
        exp = min(max(attempt - 1, 0), 64)
        try:
            secs = self.initial * self.multiplier**exp
        except OverflowError:
            return self.max
        if not math.isfinite(secs) or secs >= self.max:
            return self.max
        return max(secs, 0.0)


@dataclass(frozen=True)
class Subscription:
    """How a consumer group reads a topic; the defaults are the Rust runtime's."""

    #: Deliveries in flight at once per consume loop.
    batch_size: int = 10
    #: A delivery not settled or extended within this (seconds) is handed out again.
    visibility_timeout: float = 60.0
    #: Counted attempts before a retryable failure is dead-lettered.
    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    #: Failures go to the dead-letter topic; when off they are dropped with a log line.
    dead_letter: bool = True
    #: Treat every failure as retryable (rejects become retries).
    retry_every_error: bool = False

    def __post_init__(self) -> None:
        _check_count("batch_size", self.batch_size)
        _check_count("max_attempts", self.max_attempts)
        _check_seconds("visibility_timeout", self.visibility_timeout, 0.01, 7 * _DAY)

    @classmethod
    def dead_letter_consumer(cls, **overrides: Any) -> Subscription:
        """The preset for reading a dead-letter topic: no dead letters of its own, 1000
        attempts, every error retried."""
        values: dict[str, Any] = {"max_attempts": 1000, "dead_letter": False, "retry_every_error": True}
        values.update(overrides)
        return cls(**values)


# Errors that trying again may fix, as the Rust runtime classifies them.
_RETRYABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    rexc.ReadOnlyError,
    rexc.TryAgainError,
    rexc.ClusterDownError,
    rexc.MasterDownError,
)


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is a transport failure worth retrying (connection, timeout, busy)."""
    if isinstance(error, _RETRYABLE):
        return True
    return isinstance(error, rexc.ResponseError) and str(error).startswith(
        ("BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY")
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return min(max(int(seconds * 1000), 0), MAX_DELAY_MS)


# The client ----------------------------------------------------------------------------------


class Client:
    """Keyway on one Redis server or cluster: the connection, the key prefix, the registry and
    the server-wide settings (the runtime configuration's ``[redis]`` and ``[topics]``).

    ``redis`` is a ``redis.asyncio.Redis`` (or ``RedisCluster``) made with
    ``decode_responses=False``: entries are bytes.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        registry: Registry | None = None,
        key_prefix: str = "kw",
        dedup_ttl: float = 24 * 3600.0,
        trim_interval: float = 10.0,
        consumer_idle_removal: float = 3600.0,
        shutdown_deadline: float = 30.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        pool = getattr(redis, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        if kwargs.get("decode_responses") or getattr(redis, "decode_responses", False):
            raise ValueError(
                "the redis client decodes responses: make it with decode_responses=False "
                "(stream entries and payloads are bytes)"
            )
        if not key_prefix:
            raise ValueError("key_prefix: must not be empty")
        _check_seconds("dedup_ttl", dedup_ttl, 1, 365 * _DAY)
        _check_seconds("trim_interval", trim_interval, 0.01, _DAY)
        _check_seconds("consumer_idle_removal", consumer_idle_removal, 1, 365 * _DAY)
        _check_seconds("shutdown_deadline", shutdown_deadline, 0, 3600)
        _check_seconds("wait_timeout", wait_timeout, 0.001, 60)
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int) or not 0 <= wait_replicas <= 16:
            raise ValueError(f"wait_replicas: expected an integer from 0 to 16, found {wait_replicas!r}")
        self.redis = redis
        self.registry = registry or Registry()
        self.key_prefix = key_prefix
        self.dedup_ttl = dedup_ttl
        self.trim_interval = trim_interval
        self.consumer_idle_removal = consumer_idle_removal
        self.shutdown_deadline = shutdown_deadline
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._scripts = {name: redis.register_script(script(name)) for name in GROUP_SCRIPTS + PLAIN_SCRIPTS}
        self._checked: set[str] = set()

    def producer(self, topic: Topic[M]) -> Producer[M]:
        """A producer of ``topic``."""
        return Producer(self, topic)

    def consumer(
        self,
        topic: Topic[M],
        group: str,
        handler: Callable[[M, Delivery], Awaitable[Outcome]],
        subscription: Subscription | None = None,
    ) -> Consumer[M]:
        """A consumer of ``topic`` in ``group`` that calls ``handler``."""
        return Consumer(self, topic, group, handler, subscription)

    async def run_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of the protocol's scripts (``EVALSHA``, loading it when the server lacks it)."""
        return await self._scripts[name](keys=keys, args=args)

    async def check_stream(self, key: str) -> None:
        """Refuse stream ``key`` when its newest entry was written by a protocol version this
        package does not speak (checked once per stream)."""
        if key in self._checked:
            return
        newest = await self.redis.xrevrange(key, "+", "-", count=1) or []
        for entry_id, fields in newest:
            version = fields.get(b"v") if isinstance(fields, dict) else None
            if isinstance(version, bytes) and version not in SUPPORTED_VERSIONS:
                raise ProtocolVersionError(key, _text(entry_id), version)
        self._checked.add(key)

    async def wait_replicated(self) -> None:
        """``WAIT`` for ``wait_replicas`` replicas, when asked to; fewer is a retryable error."""
        if self.wait_replicas == 0:
            return
        acked = int(await self.redis.execute_command("WAIT", self.wait_replicas, _ms(self.wait_timeout)))
        if acked < self.wait_replicas:
            raise rexc.TimeoutError(
                f"a write reached {acked} of {self.wait_replicas} replicas within {self.wait_timeout} s "
                "(wait_replicas, wait_timeout); it may not survive a failover"
            )

    async def peek(self, topic: str, count: int = 100) -> list[Stored]:
        """Up to ``count`` entries of ``topic`` (all its buckets), oldest first, unconsumed."""
        out: list[Stored] = []
        for stream in self.registry.streams(topic):
            key = stream_key(self.key_prefix, stream)
            reply = await self.redis.execute_command("XRANGE", key, "-", "+", "COUNT", count)
            for raw_id, flat in _raw_entries(reply):
                out.append(Stored.from_fields(_text(raw_id), flat))
        out.sort(key=lambda s: tuple(int(p) for p in s.entry.split("-")))
        return out[:count]


def _raw_entries(reply: Any) -> list[tuple[bytes, list[bytes]]]:
    """``[(id, flat fields)]`` from a stream range reply, parsed by redis-py or not."""
    out = []
    for item in reply or []:
        raw_id, fields = item[0], item[1]
        if isinstance(fields, dict):
            flat = [x for kv in fields.items() for x in kv]
        else:
            flat = list(fields or [])
        out.append((raw_id, flat))
    return out


@dataclass
class Stored:
    """A stream entry as stored, read leniently (for tools: dead letters, peeking)."""

    entry: str
    id: str = ""
    partition_key: str = ""
    published_at_ms: int = 0
    payload: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)
    #: Every field, as bytes, in order.
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def from_fields(cls, entry: str, flat: list[bytes]) -> Stored:
        s = cls(entry=entry, fields=pairs(flat))
        for name, value in s.fields:
            if name == b"id":
                s.id = _text(value)
            elif name == b"pk":
                s.partition_key = _text(value)
            elif name == b"at":
                s.published_at_ms = int(value) if value.isdigit() else 0
            elif name == b"payload":
                s.payload = value
            elif name.startswith(b"m:"):
                s.metadata[_text(name[2:])] = _text(value)
        return s


# Producing -----------------------------------------------------------------------------------


class Producer(Generic[M]):
    """Publishes ``M`` on one topic, idempotently on (topic, partition key, id)."""

    def __init__(self, client: Client, topic: Topic[M]) -> None:
        self.client = client
        self.topic = topic

    async def publish(
        self,
        message: M,
        *,
        id: str,
        partition_key: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Receipt:
        """Publish ``message`` with message id ``id``. A second publish of the same id and
        partition key within the dedup TTL writes nothing and returns ``Receipt.DUPLICATE``."""
        staged = await self._addressed(message, id, partition_key, metadata)
        return await staged.publish(self.client)

    async def publish_on_ack(
        self,
        delivery: Delivery,
        message: M,
        *,
        id: str,
        partition_key: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Publish ``message`` with ``delivery``'s ack (a transactional outbox): it goes out only
        if the handler acks, on one server in the same script as the ack
        (``docs/wire-protocol.md`` §6.3), in the order staged. Dropped when the handler retries,
        rejects or postpones: the redelivery stages it again. What can be checked now (the
        message, the topic's registration, the stream's protocol version) raises here."""
        delivery._staged.append(await self._addressed(message, id, partition_key, metadata))

    async def _addressed(
        self, message: M, id: str, partition_key: str, metadata: Mapping[str, str] | None
    ) -> _Staged:
        if not isinstance(message, self.topic.message):
            raise TypeError(
                f"topic {self.topic.key!r} carries {self.topic.full_name}, not {type(message).__qualname__}"
            )
        if not isinstance(id, str) or not id:
            raise ValueError("a message id must be a non-empty string")
        if not isinstance(partition_key, str):
            raise TypeError(f"partition_key must be a string, not {type(partition_key).__qualname__}")
        pairs: list[str] = []
        for k, v in (metadata or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata {k!r}: keys and values must be strings")
            pairs += [k, v]
        c = self.client
        stream = c.registry.stream_for(self.topic.key, partition_key)
        key = stream_key(c.key_prefix, stream)
        await c.check_stream(key)
        dedup = dedup_key(c.key_prefix, stream, partition_key, id)
        return _Staged(self.topic.key, key, dedup, id, partition_key, _codec.encode(message), pairs)


@dataclass
class _Staged:
    """A message addressed to its stream, to publish now or with an ack."""

    topic: str
    stream_key: str
    dedup_key: str
    id: str
    partition_key: str
    payload: bytes
    #: Metadata names and values, flat.
    metadata: list[str]

    async def publish(self, c: Client) -> Receipt:
        """Publish with the publish script (and ``WAIT``, when ``c`` asks for it)."""
        args = [_ms(c.dedup_ttl), self.id, self.partition_key, self.payload, *self.metadata]
        reply = await c.run_script("publish", [self.stream_key, self.dedup_key], args)
        await c.wait_replicated()
        return Receipt.DUPLICATE if reply == 0 else Receipt.PUBLISHED


# Consuming -----------------------------------------------------------------------------------


class LeaseLost(Exception):
    """The delivery was handed to another consumer (its visibility timeout passed)."""


@dataclass
class Delivery:
    """A message as handed to a handler, without its decoded payload."""

    topic: str
    id: str
    partition_key: str
    payload: bytes
    metadata: dict[str, str]
    #: When it was published, ms since the epoch (server clock).
    published_at_ms: int
    #: Which attempt this is, from 1.
    attempt: int
    #: The stream entry id.
    entry: str
    _extend: Callable[[], Awaitable[None]] = field(repr=False, compare=False)
    _staged: list[_Staged] = field(default_factory=list, repr=False, compare=False)

    async def extend_visibility(self) -> None:
        """Keep this delivery from being handed to another consumer for one more visibility
        timeout from now; raises ``LeaseLost`` when it already was."""
        await self._extend()


@dataclass
class _Claimed:
    entry: str
    epoch: int
    attempt: int
    fields: list[tuple[bytes, bytes]]


def _deliveries(reply: Any) -> list[_Claimed]:
    out = []
    for d in reply or []:
        out.append(_Claimed(_text(d[0]), int(d[1]), int(d[2]), pairs(list(d[3] or []))))
    return out


_consumers = itertools.count()


class Consumer(Generic[M]):
    """Runs a handler on the deliveries of one topic as one consumer group, with the Rust
    runtime's semantics: one message per partition key at a time, in publish order; retries
    with backoff; postponement; visibility timeouts; dead letters."""

    def __init__(
        self,
        client: Client,
        topic: Topic[M],
        group: str,
        handler: Callable[[M, Delivery], Awaitable[Outcome]],
        subscription: Subscription | None = None,
    ) -> None:
        if not is_valid_topic_name(group):
            raise ValueError(f"consumer group {group!r} is not a valid name ([a-z0-9_-]{{1,255}})")
        self.client = client
        self.topic = topic
        self.group = group
        self.handler = handler
        self.subscription = subscription or Subscription()
        self.streams = client.registry.streams(topic.key)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set; then finish or release what is in flight within the
        client's shutdown deadline. Raises ``ProtocolVersionError`` on an entry of a protocol
        version it does not speak (after releasing the rest)."""
        stop = stop or asyncio.Event()
        sub = self.subscription
        if len(self.streams) > 1:
            per = max(math.ceil(sub.batch_size / len(self.streams)), 1)
            sub = Subscription(**{**sub.__dict__, "batch_size": per})
        loops = [asyncio.create_task(_Loop(self, sub, s, stop).run()) for s in self.streams]
        try:
            await asyncio.gather(*loops)
        finally:
            for t in loops:
                t.cancel()


class _Loop:
    """The consume loop of one stream (``docs/wire-protocol.md`` §6.4)."""

    def __init__(self, consumer: Consumer[Any], sub: Subscription, stream: str, stop: asyncio.Event) -> None:
        self.c = consumer
        self.client = consumer.client
        self.sub = sub
        self.stop = stop
        self.stream = stream
        self.keys = GroupKeys.of(self.client.key_prefix, stream, consumer.group)
        self.name = f"py-{os.getpid()}-{next(_consumers)}-{secrets.token_hex(4)}"
        self.closing = False
        self.head = [consumer.group, self.name, consumer.topic.key, "1" if sub.dead_letter else "0", sub.max_attempts]

    async def _group_script(self, name: str, extra: list[Any]) -> Any:
        return await self.client.run_script(name, list(self.keys.keys), self.head + extra)

    async def run(self) -> None:
        try:
            await self.client.redis.xgroup_create(self.keys.stream, self.c.group, id="0", mkstream=True)
        except rexc.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        await self.client.check_stream(self.keys.stream)
        sub, loop = self.sub, asyncio.get_running_loop()
        wake = asyncio.Event()
        listening = [False]
        waker = asyncio.create_task(self._wake_on_new_entries(wake, listening))
        stop_wait = asyncio.create_task(self.stop.wait())
        tasks: dict[asyncio.Task[float | None], tuple[str, int]] = {}
        fatal: BaseException | None = None
        quarter = math.ceil(sub.batch_size / 4)
        now = loop.time
        recover_due = now()
        recover_every = max(sub.visibility_timeout / 2, 0.2)
        trim_due = now() + self.client.trim_interval
        claim_at = now()
        # When a claim next scans for entries past the visibility timeout: the last scan said
        # when the first pending entry may expire, and an expiry only moves later.
        scan_at = now()
        idle_poll = min(5.0, max(sub.visibility_timeout, 1.0))
        backoff = 0.05

        def spawn(claimed: _Claimed) -> None:
            tasks[asyncio.create_task(self._process(claimed))] = (claimed.entry, claimed.epoch)

        def reap(done: set[asyncio.Task[float | None]]) -> float | None:
            nonlocal fatal
            soonest: float | None = None
            for t in done:
                tasks.pop(t, None)
                if t.cancelled():
                    continue
                error = t.exception()
                if error is not None:
                    if isinstance(error, ProtocolVersionError):
                        fatal = fatal or error
                    else:
                        log.warning("topic %s group %s: a delivery failed: %r", self.c.topic.key, self.c.group, error)
                    continue
                due = t.result()
                if due is not None:
                    soonest = due if soonest is None else min(soonest, due)
            return soonest

        try:
            while not self.stop.is_set() and fatal is None:
                failed: BaseException | None = None
                if now() >= recover_due and len(tasks) < sub.batch_size:
                    recover_due = now() + recover_every
                    busy = [entry for entry, _ in tasks.values()]
                    try:
                        for d in _deliveries(await self._group_script("recover", [sub.batch_size - len(tasks), *busy])):
                            spawn(d)
                    except rexc.RedisError as e:
                        failed = e
                free = sub.batch_size - len(tasks)
                if (free >= quarter or not tasks) and failed is None and now() >= claim_at:
                    try:
                        scan = now() >= scan_at
                        args: list[Any] = [free, _ms(sub.visibility_timeout)] + ([] if scan else ["0"])
                        reply = await self._group_script("claim", args)
                        if scan:
                            scan_at = now() + self._scan_again(reply)
                        wait = self._claim_wait(reply, max(scan_at - now(), 0.0))
                        most = idle_poll if listening[0] else 1.0
                        claim_at = now() + (0.0 if wait is None else min(wait, most))
                        for d in _deliveries(reply[0]):
                            spawn(d)
                    except rexc.RedisError as e:
                        failed = e
                if failed is not None:
                    log.warning("topic %s group %s: reading deliveries failed: %s", self.c.topic.key, self.c.group, failed)
                    recover_due = claim_at = scan_at = now() + backoff
                    backoff = min(backoff * 2, 2.0)
                else:
                    backoff = 0.05
                if now() >= trim_due:
                    trim_due = now() + self.client.trim_interval
                    await self._trim_and_tend()
                can_refill = len(tasks) + quarter <= sub.batch_size or not tasks
                if can_refill and now() >= claim_at:
                    continue
                waiting: set[asyncio.Future[Any]] = set(tasks) | {stop_wait}
                timeout = None
                if can_refill:
                    wake_wait = asyncio.ensure_future(wake.wait())
                    waiting.add(wake_wait)
                    timeout = max(min(claim_at, recover_due, trim_due) - now(), 0)
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if can_refill:
                    if wake_wait in done:
                        wake.clear()
                        claim_at = now()
                    else:
                        wake_wait.cancel()
                due = reap({t for t in tasks if t in done})
                if due is not None:
                    claim_at = min(claim_at, now() + due)
        finally:
            # redis-py may turn the cancellation of a blocked read into a connection error:
            # the flag, not the cancellation alone, ends the wake-up task.
            self.closing = True
            waker.cancel()
            stop_wait.cancel()
            await self._shut_down(tasks)
            await asyncio.wait({waker}, timeout=2)
        if fatal is not None:
            raise fatal

    def _scan_again(self, reply: Any) -> float:
        """After a claim that scanned: seconds until a claim must scan again."""
        more, expires = int(reply[3]), int(reply[4])
        if expires == -1:
            return self.sub.visibility_timeout
        if expires >= 0:
            return expires / 1000
        return 0.0 if more == 1 else 1.0

    def _claim_wait(self, reply: Any, until_scan: float) -> float | None:
        """How long to wait before claiming again, as far as the claim can tell (None: at once),
        when the next scan is ``until_scan`` seconds away."""
        next_due, now_ms, more = int(reply[1]), int(reply[2]), int(reply[3])
        if more == 1:
            return None
        wait = until_scan
        if next_due >= 0:
            wait = min(wait, max(next_due - now_ms, 0) / 1000)
        return wait

    async def _shut_down(self, tasks: dict[asyncio.Task[float | None], tuple[str, int]]) -> None:
        if tasks:
            done, pending = await asyncio.wait(set(tasks), timeout=self.client.shutdown_deadline)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for t in pending:
                entry, epoch = tasks[t]
                try:
                    await self._settle(entry, epoch, "release", 0, "", {})
                except rexc.RedisError as e:
                    log.warning("releasing %s failed: %s", entry, e)
        try:
            await self.client.redis.xadd(self.keys.wake, {b"by": self.name.encode()}, maxlen=1, approximate=False)
        except rexc.RedisError as e:
            log.warning("waking the group's other consumers failed: %s", e)

    async def _trim_and_tend(self) -> None:
        redis = self.client.redis
        try:
            groups = await redis.xinfo_groups(self.keys.stream)
            infos: list[dict[Any, Any]] = list(groups or [])
            names = [_text(g.get("name", g.get(b"name", b""))) for g in infos]
            helds = [GroupKeys.of(self.client.key_prefix, self.stream, n).held for n in names]
            await self.client.run_script("trim", [self.keys.stream, *helds], names)
        except rexc.RedisError as e:
            log.warning("trimming %s failed: %s", self.keys.stream, e)
        try:
            reply = await self.client.run_script(
                "tend",
                [self.keys.stream, self.keys.held],
                [self.c.group, self.name, _ms(self.client.consumer_idle_removal)],
            )
            if reply[0]:
                log.info("group %s: removed idle consumers %s", self.c.group, [_text(n) for n in reply[0]])
        except rexc.RedisError as e:
            log.warning("looking after group %s failed: %s", self.c.group, e)

    async def _wake_on_new_entries(self, wake: asyncio.Event, listening: list[bool]) -> None:
        redis = self.client.redis
        streams: dict[Any, Any] = {}
        for key in (self.keys.stream, self.keys.wake):
            try:
                newest = await redis.xrevrange(key, "+", "-", count=1)
                streams[key] = newest[0][0] if newest else b"0-0"
            except rexc.RedisError:
                streams[key] = b"0-0"
        listening[0] = True
        wake.set()
        while not self.closing:
            try:
                reply = await redis.xread(streams, count=100, block=1000)
                listening[0] = True
                items = reply.items() if isinstance(reply, dict) else (reply or [])
                for name, entries in items:
                    if entries:
                        name = _text(name)
                        streams[name] = entries[-1][0]
                        wake.set()
            except rexc.RedisError:
                if listening[0]:
                    listening[0] = False
                    wake.set()
                await asyncio.sleep(0.2)

    async def _settle(self, entry: str, epoch: int, action: str, delay_ms: int, reason: str,
                      detail: Mapping[str, str], with_ack: list[_Staged] | None = None) -> tuple[str, int]:
        keys = list(self.keys.keys)
        extra: list[Any] = [entry, epoch, action, delay_ms, reason]
        for k, v in detail.items():
            extra += [k, v]
        if action == "ack" and with_ack:
            extra.append(_ms(self.client.dedup_ttl))
            for m in with_ack:
                keys += [m.stream_key, m.dedup_key]
                extra += [m.id, m.partition_key, m.payload, len(m.metadata) // 2, *m.metadata]
        wait = 0.05
        for tries in range(1, 5):
            try:
                reply = await self.client.run_script("settle", keys, self.head + extra)
                return _text(reply[0]), int(reply[1])
            except rexc.RedisError as e:
                if not is_retryable(e) or tries == 4:
                    raise
                await asyncio.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")

    async def _process(self, claimed: _Claimed) -> float | None:
        version = version_of(claimed.fields)
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise ProtocolVersionError(self.keys.stream, claimed.entry, version)
        envelope = read_envelope(claimed.fields)
        topic, sub = self.c.topic, self.sub
        if isinstance(envelope, list):
            reason = "malformed stream entry: " + "; ".join(envelope)
            log.warning("topic %s group %s entry %s: %s", topic.key, self.c.group, claimed.entry, reason)
            return await self._settled(claimed, "malformed", 0, reason, {"kind": "malformed"})
        outcome: Outcome
        staged: list[_Staged] = []
        try:
            message = _codec.decode(envelope.payload, topic.message)
        except _codec.DecodeError as e:
            detail = {"kind": "decode", "message": topic.full_name}
            if e.offset is not None:
                detail["offset"] = str(e.offset)
            outcome = Reject(f"payload does not decode as {topic.full_name}: {e}", **detail)
        else:

            async def extend() -> None:
                status, _ = await self._settle(claimed.entry, claimed.epoch, "extend", 0, "", {})
                if status != "ok":
                    raise LeaseLost("the delivery was already reclaimed by another consumer")

            delivery = Delivery(
                topic=topic.key,
                id=envelope.id,
                partition_key=envelope.partition_key,
                payload=envelope.payload,
                metadata=envelope.metadata,
                published_at_ms=envelope.published_at_ms,
                attempt=claimed.attempt,
                entry=claimed.entry,
                _extend=extend,
            )
            staged = delivery._staged
            try:
                outcome = await self.c.handler(message, delivery)
            except (Retry, Reject) as f:
                outcome = f
            except Failure as f:
                outcome = Reject(f.reason, **f.detail)
            except Exception as e:  # noqa: BLE001 - every handler error is settled, as in Rust
                text = str(e) or type(e).__name__
                outcome = Retry(text) if is_retryable(e) else Reject(text)
        if outcome is None or isinstance(outcome, Ack):
            if not staged or self._may_publish_with_ack(staged):
                return await self._settled(claimed, "ack", 0, "", {}, staged)
            failed = await self._publish_before_ack(staged)
            if failed is None:
                return await self._settled(claimed, "ack", 0, "", {})
            outcome = failed
        if isinstance(outcome, Postpone):
            return await self._settled(claimed, "postpone", _ms(outcome.delay), "", {})
        if isinstance(outcome, Retry) or (isinstance(outcome, Reject) and sub.retry_every_error):
            delay = _ms(sub.backoff.delay(claimed.attempt))
            return await self._settled(claimed, "nack", delay, outcome.reason, outcome.detail)
        if isinstance(outcome, Reject):
            return await self._settled(claimed, "reject", 0, outcome.reason, outcome.detail)
        raise TypeError(
            f"a handler of {topic.key!r} returned {outcome!r}: expected None, ACK, Postpone, Retry or Reject"
        )

    def _may_publish_with_ack(self, staged: list[_Staged]) -> bool:
        """On one server always; on a cluster when every key is in the group's slot (a
        script's keys must share one)."""
        if not isinstance(self.client.redis, aioredis.RedisCluster):
            return True
        slot = key_slot(self.keys.stream.encode())
        return all(key_slot(k.encode()) == slot for m in staged for k in (m.stream_key, m.dedup_key))

    async def _publish_before_ack(self, staged: list[_Staged]) -> Outcome | None:
        """Publish messages staged with an ack one by one, in order, before the ack; a failure
        makes the ack a retry (or a reject, when retrying cannot help)."""
        for m in staged:
            try:
                await m.publish(self.client)
            except rexc.RedisError as e:
                reason = f'publishing on "{m.topic}" with the ack failed: {e}'
                return Retry(reason, kind="publish") if is_retryable(e) else Reject(reason, kind="publish")
        return None

    async def _settled(self, claimed: _Claimed, action: str, delay_ms: int, reason: str,
                       detail: Mapping[str, str], with_ack: list[_Staged] | None = None) -> float | None:
        try:
            status, due_in = await self._settle(claimed.entry, claimed.epoch, action, delay_ms, reason, detail,
                                                with_ack)
        except rexc.RedisError as e:
            log.warning("settling %s failed, it is redelivered after the visibility timeout: %s", claimed.entry, e)
            return None
        if status == "dropped":
            log.warning("delivery %s failed and the subscription has no dead-letter stream: dropped (%s)",
                        claimed.entry, reason)
        elif status == "stale":
            log.warning("settling %s refused: the delivery was reclaimed by another consumer", claimed.entry)
        return due_in / 1000 if due_in >= 0 else None

