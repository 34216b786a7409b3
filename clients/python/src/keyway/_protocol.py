"""The queue's wire protocol (``docs/wire-protocol.md``): names, keys, buckets and entries.

Pure functions only; nothing here talks to Redis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: The protocol version this package speaks (entry field ``v``).
PROTOCOL_VERSION = 1
#: Versions it reads. An entry without ``v`` is version 1.
SUPPORTED_VERSIONS = frozenset({b"1"})

DEAD_LETTER_SUFFIX = "_dlq"
BUCKETS_MAX = 1024
MAX_DELAY_MS = 365 * 86_400 * 1000

_TOPIC_NAME = re.compile(r"[a-z0-9_-]{1,255}")


class ProtocolVersionError(Exception):
    """A stream holds an entry written by a protocol version this package does not speak."""

    def __init__(self, stream_key: str, entry: str, version: bytes) -> None:
        shown = version.decode("utf-8", "replace")
        super().__init__(
            f"stream {stream_key}: entry {entry} was written by protocol version {shown}; "
            f"this client speaks version {PROTOCOL_VERSION}"
        )
        self.stream_key = stream_key
        self.entry = entry
        self.version = shown


def is_valid_topic_name(name: str) -> bool:
    """Whether ``name`` is a valid topic key, stream or group name: ``[a-z0-9_-]{1,255}``."""
    return _TOPIC_NAME.fullmatch(name) is not None


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def bucket_of(partition_key: str, buckets: int) -> int:
    """The bucket of ``partition_key`` in a topic of ``buckets`` streams."""
    return fnv1a64(partition_key.encode("utf-8")) % max(buckets, 1)


def bucket_stream(stream: str, buckets: int, bucket: int) -> str:
    """The stream of one bucket: the stream itself for one bucket, else ``<stream>#<bucket>``."""
    return stream if buckets <= 1 else f"{stream}#{bucket}"


def hash_tag(stream: str) -> str:
    """A stream's hash tag: its name without trailing ``_dlq`` suffixes."""
    tag = stream
    while tag.endswith(DEAD_LETTER_SUFFIX) and len(tag) > len(DEAD_LETTER_SUFFIX):
        tag = tag[: -len(DEAD_LETTER_SUFFIX)]
    return tag


def stream_key(prefix: str, stream: str) -> str:
    return f"{prefix}:{{{hash_tag(stream)}}}:s:{stream}"


def dedup_key(prefix: str, stream: str, partition_key: str, message_id: str) -> str:
    length = len(partition_key.encode("utf-8"))
    return f"{prefix}:{{{hash_tag(stream)}}}:d:{stream}:{length}:{partition_key}:{message_id}"


@dataclass(frozen=True)
class GroupKeys:
    """The nine keys of a group script, in order, and the group's wake-up stream."""

    keys: tuple[str, ...]
    wake: str

    @classmethod
    def of(cls, prefix: str, stream: str, group: str) -> GroupKeys:
        tag = hash_tag(stream)

        def g(part: str) -> str:
            return f"{prefix}:{{{tag}}}:g:{stream}:{group}:{part}"

        keys = (
            stream_key(prefix, stream),
            g("heads"),
            g("waiting"),
            g("due"),
            g("held"),
            g("attempts"),
            g("errors"),
            g("pks"),
            stream_key(prefix, stream + DEAD_LETTER_SUFFIX),
        )
        return cls(keys, g("wake"))

    @property
    def stream(self) -> str:
        return self.keys[0]

    @property
    def held(self) -> str:
        return self.keys[4]


def pad(entry_id: str) -> str:
    """An entry id with both parts padded to 20 digits, so that text order is id order."""
    ms, seq = entry_id.split("-")
    return f"{ms.rjust(20, '0')}-{seq.rjust(20, '0')}"


class Registry:
    """Topic key → stream name, and the topics spread over buckets.

    Dead-letter keys (``<key>_dlq``) resolve to ``<stream>_dlq`` without being listed. With
    ``identity=True`` (the default) a key that is not listed is its own stream, as in the
    runtime configuration's default.
    """

    def __init__(
        self,
        streams: dict[str, str] | None = None,
        buckets: dict[str, int] | None = None,
        *,
        identity: bool = True,
    ) -> None:
        self._streams: dict[str, str] = {}
        self._buckets: dict[str, int] = {}
        self._identity = identity
        for key, stream in (streams or {}).items():
            where = f"topics.{key}"
            if not is_valid_topic_name(key):
                raise ValueError(f"{where}: the topic key is not a valid topic name ([a-z0-9_-]{{1,255}})")
            if not is_valid_topic_name(stream):
                raise ValueError(
                    f"{where}: stream name {stream!r} is not a valid topic name ([a-z0-9_-]{{1,255}})"
                )
            for other, s in self._streams.items():
                if s == stream:
                    raise ValueError(f"{where}: stream {stream!r} is already the stream of topic key {other!r}")
            self._streams[key] = stream
        for key, n in (buckets or {}).items():
            where = f"topics.{key}.buckets"
            if self._base_stream(key) is None:
                raise ValueError(f"{where}: the topic key is not registered")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= BUCKETS_MAX:
                raise ValueError(f"{where}: expected an integer from 1 to {BUCKETS_MAX}, found {n!r}")
            if n > 1:
                self._buckets[key] = n

    def _base_stream(self, key: str) -> str | None:
        if key in self._streams:
            return self._streams[key]
        if self._identity and is_valid_topic_name(key):
            return key
        return None

    def _split(self, key: str) -> tuple[str, str] | None:
        """``(base key, suffix)``: a listed key as it is, a dead-letter key as its base."""
        if key in self._streams:
            return key, ""
        base = key[: -len(DEAD_LETTER_SUFFIX)] if key.endswith(DEAD_LETTER_SUFFIX) else None
        if base is not None and (base in self._streams or base in self._buckets):
            return base, DEAD_LETTER_SUFFIX
        if self._identity and is_valid_topic_name(key):
            return key, ""
        return None

    def buckets(self, key: str) -> int:
        """How many streams ``key`` is spread over (a dead-letter key: as many as its topic)."""
        split = self._split(key)
        return self._buckets.get(split[0], 1) if split else 1

    def streams(self, key: str) -> list[str]:
        """Every stream of ``key``, one per bucket."""
        split = self._split(key)
        if split is None:
            raise KeyError(f"topic key {key!r} is not in the registry")
        base, suffix = split
        stream = self._streams.get(base, base)
        n = self._buckets.get(base, 1)
        return [bucket_stream(stream, n, b) + suffix for b in range(n)]

    def stream_for(self, key: str, partition_key: str) -> str:
        """The stream a message of ``key`` with ``partition_key`` goes to."""
        streams = self.streams(key)
        return streams[bucket_of(partition_key, len(streams))]


@dataclass
class Envelope:
    """The fields of a stream entry that make a delivery."""

    id: str = ""
    partition_key: str = ""
    published_at_ms: int = 0
    payload: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)


_ENVELOPE_FIELDS = (b"id", b"pk", b"at", b"payload")
_U64 = re.compile(rb"\+?[0-9]+")


def version_of(fields: list[tuple[bytes, bytes]]) -> bytes | None:
    """The ``v`` field of an entry, or None when it has none."""
    for name, value in fields:
        if name == b"v":
            return value
    return None


def read_envelope(fields: list[tuple[bytes, bytes]]) -> Envelope | list[str]:
    """The envelope of an entry, or every problem with it, in the words of the protocol."""
    counts = {name: 0 for name in _ENVELOPE_FIELDS}
    firsts: dict[bytes, bytes] = {}
    metadata: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        if name in counts:
            counts[name] += 1
            firsts.setdefault(name, value)
        elif name.startswith(b"m:"):
            metadata.append((name[2:], value))

    problems: list[str] = []
    env = Envelope()
    for name in _ENVELOPE_FIELDS:
        shown = name.decode()
        n = counts[name]
        if n == 0:
            problems.append(f"no `{shown}` field")
            continue
        if n > 1:
            problems.append(f"`{shown}` appears {n} times")
        value = firsts[name]
        if name in (b"id", b"pk"):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"`{shown}` is not UTF-8")
                continue
            if name == b"id":
                if text == "":
                    problems.append("`id` is empty")
                else:
                    env.id = text
            else:
                env.partition_key = text
        elif name == b"at":
            at = int(value) if _U64.fullmatch(value) else -1
            if 0 <= at < 1 << 64:
                env.published_at_ms = at
            else:
                problems.append("`at` is not a number of milliseconds")
        else:
            env.payload = value
    repeated: set[str] = set()
    for raw_key, raw_value in metadata:
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            problems.append("a metadata field name (`m:...`) is not UTF-8")
            continue
        try:
            value_text = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"metadata `m:{key}` is not UTF-8")
            continue
        if key in env.metadata:
            if key not in repeated:
                problems.append(f"metadata `m:{key}` appears more than once")
                repeated.add(key)
            continue
        env.metadata[key] = value_text
    return problems if problems else env


def pairs(flat: list[bytes]) -> list[tuple[bytes, bytes]]:
    """A flat ``[name, value, name, value, ...]`` reply as pairs."""
    return [(flat[i], flat[i + 1] if i + 1 < len(flat) else b"") for i in range(0, len(flat), 2)]
