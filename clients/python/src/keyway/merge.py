"""Submitting work to Keyway's merge service, and reading where it is.

``submit`` does what ``keyway submit`` does (``docs/wire-protocol.md`` §9): checks the batch,
writes its requests and the batch with the store's compare-and-set script, and hands the batch
to the merge stage on ``submitqueue-merge``. ``status`` reads a batch and its requests back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from . import _codec
from ._client import Client, Receipt
from .orchestrator import topics as otopics
from .orchestrator.v1.messages_pb2 import (
    BATCH_STATE_CANCELLED,
    BATCH_STATE_FAILED,
    BATCH_STATE_MERGING,
    BATCH_STATE_SUCCEEDED,
    LAND_STRATEGY_PROMOTE,
    LAND_STRATEGY_UNSET,
    REQUEST_STATE_QUEUED,
    Batch,
    BatchRef,
    BatchState,
    LandStrategy,
    Request,
    RequestState,
)

TERMINAL = frozenset({BATCH_STATE_SUCCEEDED, BATCH_STATE_FAILED, BATCH_STATE_CANCELLED})


@dataclass(frozen=True)
class NewRequest:
    """One request of a batch: change URIs (a stack, bottom first) and how to land them."""

    uris: Sequence[str]
    strategy: LandStrategy = LAND_STRATEGY_UNSET


class SubmitError(Exception):
    """A submission was not accepted; nothing was written."""


class HandOverError(SubmitError):
    """The batch is recorded but handing it to the merge stage failed; ``hand_over(client,
    error.batch)`` is safe to repeat."""

    def __init__(self, batch: Batch, cause: BaseException) -> None:
        super().__init__(f"{batch.id} is recorded but was not handed to the merge stage ({cause})")
        self.batch = batch


class ConflictError(SubmitError):
    """A record changed (or existed) where it was written as new."""


@dataclass
class BatchStatus:
    """A batch's record and its requests' records."""

    batch: Batch
    requests: list[Request]

    @property
    def state(self) -> str:
        return str(BatchState.Name(self.batch.state))

    @property
    def done(self) -> bool:
        return self.batch.state in TERMINAL


# Change URIs, as the merge service parses them -------------------------------------------------

_SHA = re.compile(r"[0-9a-f]{40}")


def _excerpt(s: str) -> str:
    return s[:48] + "…" if len(s) > 48 else s


def _percent_decode(s: str) -> str:
    out = bytearray()
    raw = s.encode("utf-8")
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:
            h = raw[i + 1 : i + 3]
            if len(h) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in h):
                raise ValueError(f"bad percent-encoding in `{_excerpt(s)}`")
            out.append(int(h, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"`{_excerpt(s)}` does not decode to UTF-8") from None


def _check_ref(r: str) -> None:
    def wrong(why: str) -> ValueError:
        return ValueError(f"ref `{_excerpt(r)}` {why}")

    if not r.startswith("refs/"):
        raise wrong("is not fully qualified (expected refs/…)")
    if r.endswith(("/", ".lock", ".")):
        raise wrong("has a bad ending")
    if any(x in r for x in ("..", "//", "@{", "/.")):
        raise wrong("is not a valid ref name")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in " ~^:?*[\\" for c in r):
        raise wrong("contains a character refs cannot have")


def _check_host(host: str) -> None:
    name, sep, port = host.rpartition(":")
    if not sep:
        name, port = host, ""
    if not name or not all(c.isascii() and (c.isalnum() or c in ".-") for c in name):
        raise ValueError(f"`{_excerpt(host)}` is not a host name")
    if sep and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"`{_excerpt(port)}` is not a port")


def change_provider(uri: str) -> str:
    """The provider (`git://<host>` or `file://`) of change URI ``uri``; ``ValueError`` says
    what is wrong with a malformed one."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError("not a URI (expected git://… or file:///…)")
    if "?" in rest or "#" in rest:
        raise ValueError("a change URI has no query or fragment")
    if scheme == "git":
        host, slash, path = rest.partition("/")
        if not slash:
            raise ValueError("no repository path after the host")
        if not host:
            raise ValueError("no host")
        if "@" in host:
            raise ValueError("a change URI has no user info")
        _check_host(host)
    elif scheme == "file":
        if not rest.startswith("/"):
            raise ValueError("a file URI names an absolute path with no host: file:///path/…")
        host, path = "", rest[1:]
    else:
        raise ValueError(f"unsupported scheme `{scheme}://` (expected git:// or file://)")
    segments = path.split("/")
    sha = segments.pop()
    if not segments:
        raise ValueError("expected <repository>/<ref>/<sha>")
    encoded_ref = segments.pop()
    if not _SHA.fullmatch(sha):
        raise ValueError(f"`{_excerpt(sha)}` is not a 40-hex lowercase commit sha")
    _check_ref(_percent_decode(encoded_ref))
    if not segments or any(s in ("", "..") for s in segments):
        raise ValueError("expected a repository path before the ref")
    return f"{scheme}://{host}"


_QUEUE = re.compile(r"[A-Za-z0-9._-]{1,100}")


def check(queue: str, requests: Sequence[NewRequest]) -> None:
    """Check a submission without touching Redis; ``SubmitError`` says what is wrong."""
    if not _QUEUE.fullmatch(queue):
        raise SubmitError(f"queue {queue!r}: expected 1 to 100 letters, digits, `-`, `_` or `.`")
    if not requests:
        raise SubmitError("a batch needs at least one request")
    provider: str | None = None
    for n, r in enumerate(requests, 1):
        if not r.uris:
            raise SubmitError(f"request {n}: no change URIs")
        if r.strategy == LAND_STRATEGY_PROMOTE and (len(requests) != 1 or len(r.uris) != 1):
            raise SubmitError(f"request {n}: promote needs a batch of exactly one request with one URI")
        for j, uri in enumerate(r.uris, 1):
            try:
                p = change_provider(uri)
            except ValueError as e:
                raise SubmitError(f"request {n}, URI {j}: {uri}: {e}") from None
            if provider is not None and p != provider:
                raise SubmitError(f"request {n}, URI {j}: {uri} is on {p}, the batch's other changes on {provider}")
            provider = provider or p


# The store -----------------------------------------------------------------------------------


def _key(client: Client, queue: str, rest: str) -> str:
    return f"{client.key_prefix}:st:{{{queue}}}:{rest}"


def _queue_of(entity_id: str) -> str:
    return entity_id.split("/", 1)[0]


async def _create(client: Client, kind: str, record: Any, state: str, all_states: Sequence[str]) -> None:
    """Write a new record (read version 0) and move its membership to ``state``."""
    record.version = 1
    key = _key(client, record.queue, f"{kind}:{record.id}")
    # One record, no sets, no lists: [1, previous state] when written, [0, 1] on a mismatch.
    args = ["1", "0", "0", "0", "1", _codec.encode(record), state, record.id]
    reply = await client.run_script("store_cas", [key], args)
    if reply[0] == 0:
        raise ConflictError(f"version conflict on {kind} {record.id}: it exists already")
    previous = reply[1].decode("utf-8", "replace") if isinstance(reply[1], bytes) else str(reply[1])
    if previous == "":
        before: Sequence[str] = []
    elif previous == "?":
        before = [s for s in all_states if s != state]
    else:
        before = [previous] if previous != state else []
    pipe = client.redis.pipeline(transaction=False)
    for other in before:
        pipe.srem(_key(client, record.queue, f"{kind}s:{other}"), record.id)
    pipe.sadd(_key(client, record.queue, f"{kind}s:{state}"), record.id)
    await pipe.execute()
    await client.wait_replicated()


async def _next_number(client: Client, queue: str, kind: str) -> int:
    return int(await client.redis.incr(_key(client, queue, f"seq:{kind}")))


async def submit(client: Client, queue: str, requests: Sequence[NewRequest]) -> Batch:
    """Submit a batch of ``requests`` to ``queue``: check it, record its requests (queued) and
    the batch (merging), and hand it to the merge stage. Returns the batch as written."""
    check(queue, requests)
    records = []
    for r in requests:
        n = await _next_number(client, queue, "request")
        records.append(
            Request(id=f"{queue}/{n}", queue=queue, uris=list(r.uris), strategy=r.strategy, state=REQUEST_STATE_QUEUED)
        )
    n = await _next_number(client, queue, "batch")
    batch = Batch(id=f"{queue}/batch/{n}", queue=queue, contains=[r.id for r in records], state=BATCH_STATE_MERGING)
    await client.redis.sadd(f"{client.key_prefix}:st:queues", queue)
    request_states = list(RequestState.keys())
    for record in records:
        await _create(client, "request", record, RequestState.Name(record.state), request_states)
    await _create(client, "batch", batch, BatchState.Name(batch.state), list(BatchState.keys()))
    await hand_over(client, batch)
    return batch


async def hand_over(client: Client, batch: Batch) -> Receipt:
    """Publish ``batch`` on ``submitqueue-merge`` (partition key its queue, id
    ``<batch>/merge``): repeating it is harmless."""
    try:
        return await client.producer(otopics.SUBMITQUEUE_MERGE).publish(
            BatchRef(id=batch.id, queue=batch.queue, contains=batch.contains),
            id=f"{batch.id}/merge", partition_key=batch.queue
        )
    except Exception as e:
        raise HandOverError(batch, e) from e


async def _load(client: Client, key: str, cls: type[Message]) -> Any:
    data = await client.redis.hget(key, "d")
    if data is None:
        return None
    try:
        return _codec.decode(data if isinstance(data, bytes) else data.encode(), cls)
    except _codec.DecodeError as e:
        raise SubmitError(f"stored record {key} is corrupt: {e}") from None


async def status(client: Client, batch_id: str) -> BatchStatus | None:
    """The batch ``batch_id`` and its requests, or None when there is no such batch."""
    queue = _queue_of(batch_id)
    batch = await _load(client, _key(client, queue, f"batch:{batch_id}"), Batch)
    if batch is None:
        return None
    requests = []
    for rid in batch.contains:
        r = await _load(client, _key(client, _queue_of(rid), f"request:{rid}"), Request)
        if r is not None:
            requests.append(r)
    return BatchStatus(batch, requests)
