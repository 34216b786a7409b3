"""The protocol's pure parts: buckets, names, keys and the envelope, with the Rust runtime's
vectors and wording."""

from __future__ import annotations

import pytest

from keyway import Registry, bucket_of, fnv1a64
from keyway._protocol import GroupKeys, dedup_key, hash_tag, pad, read_envelope, stream_key

GOOD = [(b"id", b"o-1"), (b"pk", b"k"), (b"at", b"1700000000000"), (b"payload", b"\xff{}"), (b"m:trace", b"t-1")]


def test_fnv1a_and_buckets_match_rust() -> None:
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert bucket_of("a", 4) == 0xAF63DC4C8601EC8C % 4 == 0
    assert bucket_of("a", 13) == 0xAF63DC4C8601EC8C % 13 == 11
    assert bucket_of("", 7) == 0xCBF29CE484222325 % 7
    assert bucket_of("anything", 1) == 0
    # Keys spread: 64 keys reach every bucket.
    assert {bucket_of(f"k{i}", 4) for i in range(64)} == {0, 1, 2, 3}
    # UTF-8 bytes, not code points.
    assert fnv1a64("é".encode()) != fnv1a64(b"\xe9")
    assert bucket_of("é", 1000) == fnv1a64(b"\xc3\xa9") % 1000


def test_registry_resolves_streams_buckets_and_dead_letters() -> None:
    r = Registry({"orders": "ord", "plain": "plain"}, buckets={"orders": 4})
    assert r.streams("orders") == ["ord#0", "ord#1", "ord#2", "ord#3"]
    assert r.streams("orders_dlq") == ["ord#0_dlq", "ord#1_dlq", "ord#2_dlq", "ord#3_dlq"]
    assert r.buckets("orders_dlq") == 4
    assert r.stream_for("orders", "a") == "ord#0"
    assert r.stream_for("orders", "k") == f"ord#{bucket_of('k', 4)}"
    assert r.streams("plain_dlq") == ["plain_dlq"]
    assert r.streams("unlisted") == ["unlisted"]
    with pytest.raises(KeyError, match="not in the registry"):
        Registry({}, identity=False).streams("orders")
    with pytest.raises(ValueError, match=r"topics.orders.buckets: expected an integer from 1 to 1024, found 0"):
        Registry({"orders": "ord"}, buckets={"orders": 0})
    with pytest.raises(ValueError, match="already the stream of topic key 'a'"):
        Registry({"a": "s", "b": "s"})
    with pytest.raises(ValueError, match="not a valid topic name"):
        Registry({"Bad": "s"})


def test_keys_carry_the_stream_name_less_dlq_as_hash_tag() -> None:
    assert hash_tag("orders_dlq_dlq") == "orders"
    assert hash_tag("ord#3_dlq") == "ord#3"
    assert hash_tag("_dlq") == "_dlq"
    assert stream_key("kw", "orders_dlq") == "kw:{orders}:s:orders_dlq"
    assert dedup_key("kw", "orders", "ké", "m/1") == "kw:{orders}:d:orders:3:ké:m/1"
    g = GroupKeys.of("kw", "orders", "billing")
    assert g.keys == (
        "kw:{orders}:s:orders",
        "kw:{orders}:g:orders:billing:heads",
        "kw:{orders}:g:orders:billing:waiting",
        "kw:{orders}:g:orders:billing:due",
        "kw:{orders}:g:orders:billing:held",
        "kw:{orders}:g:orders:billing:attempts",
        "kw:{orders}:g:orders:billing:errors",
        "kw:{orders}:g:orders:billing:pks",
        "kw:{orders}:s:orders_dlq",
    )
    assert g.wake == "kw:{orders}:g:orders:billing:wake"
    assert pad("1700000000000-3") == "00000001700000000000-00000000000000000003"


def test_an_entry_as_published_reads_whole() -> None:
    fields = GOOD + [(b"later", b"x"), (b"\xfe\xff", b"x"), (b"v", b"1")]
    env = read_envelope(fields)
    assert not isinstance(env, list)
    assert (env.id, env.partition_key, env.published_at_ms, env.payload) == ("o-1", "k", 1_700_000_000_000, b"\xff{}")
    assert env.metadata == {"trace": "t-1"}
    empty_pk = read_envelope([GOOD[0], (b"pk", b""), *GOOD[2:]])
    assert not isinstance(empty_pk, list) and empty_pk.partition_key == ""


def test_every_problem_of_an_envelope_is_named_as_rust_names_it() -> None:
    assert read_envelope(GOOD[1:]) == ["no `id` field"]
    assert read_envelope([(b"payload", b"")]) == ["no `id` field", "no `pk` field", "no `at` field"]
    twice = GOOD + [(b"id", b"o-2"), (b"m:trace", b"t-2"), (b"m:trace", b"t-3")]
    assert read_envelope(twice) == ["`id` appears 2 times", "metadata `m:trace` appears more than once"]
    bad = [(b"id", b""), (b"pk", b"\xff"), (b"at", b"soon"), GOOD[3], (b"m:trace", b"\xc3"), (b"m:\xff", b"x"),
           (b"m:ok", b"fine")]
    assert read_envelope(bad) == [
        "`id` is empty",
        "`pk` is not UTF-8",
        "`at` is not a number of milliseconds",
        "metadata `m:trace` is not UTF-8",
        "a metadata field name (`m:...`) is not UTF-8",
    ]
    for at in (b"-5", b"", b"18446744073709551616", b"1.5"):
        assert read_envelope([GOOD[0], GOOD[1], (b"at", at), GOOD[3]]) == ["`at` is not a number of milliseconds"]
    ok = read_envelope([GOOD[0], GOOD[1], (b"at", b"+18446744073709551615"), GOOD[3]])
    assert not isinstance(ok, list) and ok.published_at_ms == 2**64 - 1
