// The pure parts of the protocol, against the Rust runtime's own vectors.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Keyway } from "../src/index.js";
import { bucketOf, dedupKey, fnv1a64, groupKeys, hashTag, readEnvelope, streamKey } from "../src/protocol.js";
import { backoffDelay } from "../src/consumer.js";
import { Script, scripts } from "../src/scripts.js";

test("FNV-1a 64 and the bucket choice match the documented vectors", () => {
  assert.equal(fnv1a64(""), 0xcbf29ce484222325n);
  assert.equal(fnv1a64("a"), 0xaf63dc4c8601ec8cn);
  assert.equal(bucketOf("a", 4), 0);
  assert.equal(bucketOf("a", 13), 11);
  assert.equal(bucketOf("anything", 1), 0);
});

test("the bucket choice is the Rust runtime's for every vector it computed", (t) => {
  const vectors = process.env.KEYWAY_BUCKET_VECTORS;
  if (!vectors) {
    t.skip("KEYWAY_BUCKET_VECTORS is set by tests/clients_typescript.rs");
    return;
  }
  const list = JSON.parse(vectors) as Array<{ key: string; buckets: number; bucket: number }>;
  assert.ok(list.length > 10);
  for (const { key, buckets, bucket } of list) {
    assert.equal(bucketOf(key, buckets), bucket, `bucket of ${JSON.stringify(key)} in ${buckets}`);
  }
});

test("keys follow the layout: one hash tag per stream and its dead letters", () => {
  assert.equal(hashTag("orders_dlq"), "orders");
  assert.equal(hashTag("orders#3_dlq_dlq"), "orders#3");
  assert.equal(hashTag("_dlq"), "_dlq");
  assert.equal(streamKey("kw", "orders_dlq"), "kw:{orders}:s:orders_dlq");
  // The partition key's length is in bytes.
  assert.equal(dedupKey("kw", "orders", "ü", "o-1"), "kw:{orders}:d:orders:2:ü:o-1");
  const g = groupKeys("kw", "orders#1", "billing");
  assert.deepEqual(g.keys, [
    "kw:{orders#1}:s:orders#1",
    "kw:{orders#1}:g:orders#1:billing:heads",
    "kw:{orders#1}:g:orders#1:billing:waiting",
    "kw:{orders#1}:g:orders#1:billing:due",
    "kw:{orders#1}:g:orders#1:billing:held",
    "kw:{orders#1}:g:orders#1:billing:attempts",
    "kw:{orders#1}:g:orders#1:billing:errors",
    "kw:{orders#1}:g:orders#1:billing:pks",
    "kw:{orders#1}:s:orders#1_dlq",
  ]);
  assert.equal(g.wake, "kw:{orders#1}:g:orders#1:billing:wake");
});

test("topics map to streams and buckets as the registry does", () => {
  const redis = {} as never;
  const kw = new Keyway(redis, { topics: { "merge-signal": { stream: "ms", buckets: 4 }, conclude: "c" } });
  assert.deepEqual(kw.streams("merge-signal"), ["ms#0", "ms#1", "ms#2", "ms#3"]);
  assert.deepEqual(kw.streams("merge-signal_dlq"), ["ms#0_dlq", "ms#1_dlq", "ms#2_dlq", "ms#3_dlq"]);
  assert.equal(kw.streamFor("merge-signal", "a"), "ms#0");
  assert.equal(kw.streamFor("conclude_dlq", "a"), "c_dlq");
  assert.equal(kw.streamFor("unlisted", "a"), "unlisted");
  assert.throws(() => kw.streams("Bad Key"), /topic: "Bad Key" is not a valid topic key/);
  assert.throws(() => new Keyway(redis, { topics: { a: "s", b: "s" } }), /topics\.b: stream "s" is already the stream of topic key "a"/);
  assert.throws(() => new Keyway(redis, { topics: { a: { buckets: 0 } } }), /topics\.a\.buckets: expected an integer from 1 to 1024, found 0/);
  assert.throws(() => new Keyway(redis, { dedupTtlMs: 10 }), /dedupTtlMs: expected an integer from 1000/);
});

const enc = (s: string) => new TextEncoder().encode(s);
const bytes = (...b: number[]) => Uint8Array.from(b);
function entry(fields: Array<[Uint8Array | string, Uint8Array | string]>): Array<[Uint8Array, Uint8Array]> {
  return fields.map(([k, v]) => [typeof k === "string" ? enc(k) : k, typeof v === "string" ? enc(v) : v]);
}
const GOOD: Array<[Uint8Array | string, Uint8Array | string]> = [
  ["id", "o-1"],
  ["pk", "k"],
  ["at", "1700000000000"],
  ["payload", bytes(0xff, 0x7b, 0x7d)],
  ["m:trace", "t-1"],
];
function problems(fields: Array<[Uint8Array | string, Uint8Array | string]>): string[] {
  const r = readEnvelope(entry(fields));
  assert.equal(r.ok, false);
  return r.ok ? [] : r.problems;
}

test("an entry as published reads whole; unknown fields are ignored", () => {
  const r = readEnvelope(entry([...GOOD, ["later", "x"], [bytes(0xfe, 0xff), "x"], ["v", "1"]]));
  assert.ok(r.ok);
  assert.equal(r.envelope.id, "o-1");
  assert.equal(r.envelope.partitionKey, "k");
  assert.equal(r.envelope.publishedAtMs, 1_700_000_000_000);
  assert.deepEqual([...r.envelope.payload], [0xff, 0x7b, 0x7d]);
  assert.deepEqual({ ...r.envelope.metadata }, { trace: "t-1" });
  const empty = readEnvelope(entry(GOOD.map(([k, v]) => (k === "pk" ? [k, ""] : [k, v]))));
  assert.ok(empty.ok && empty.envelope.partitionKey === "");
});

test("every problem of an envelope is named in the Rust runtime's words", () => {
  assert.deepEqual(problems(GOOD.slice(1)), ["no `id` field"]);
  assert.deepEqual(problems([["payload", ""]]), ["no `id` field", "no `pk` field", "no `at` field"]);
  assert.deepEqual(problems([...GOOD, ["id", "o-2"], ["m:trace", "t-2"], ["m:trace", "t-3"]]), [
    "`id` appears 2 times",
    "metadata `m:trace` appears more than once",
  ]);
  const bad = entry(GOOD);
  bad[0] = [enc("id"), enc("")];
  bad[1] = [enc("pk"), bytes(0xff)];
  bad[2] = [enc("at"), enc("soon")];
  bad[4] = [enc("m:trace"), bytes(0xc3)];
  bad.push([bytes(0x6d, 0x3a, 0xff), enc("x")], [enc("m:ok"), enc("fine")]);
  const r = readEnvelope(bad);
  assert.ok(!r.ok);
  assert.deepEqual(r.problems, [
    "`id` is empty",
    "`pk` is not UTF-8",
    "`at` is not a number of milliseconds",
    "metadata `m:trace` is not UTF-8",
    "a metadata field name (`m:...`) is not UTF-8",
  ]);
  assert.deepEqual(problems(GOOD.map(([k, v]) => (k === "at" ? [k, "-5"] : [k, v]))), ["`at` is not a number of milliseconds"]);
  // A metadata key that is a property name of plain objects is just a key.
  const proto = readEnvelope(entry([...GOOD, ["m:__proto__", "x"]]));
  assert.ok(proto.ok && proto.envelope.metadata["__proto__"] === "x");
});

test("backoff grows from the attempt and stops at its cap", () => {
  const b = { initialMs: 1000, multiplier: 2, maxMs: 30_000 };
  assert.deepEqual([1, 2, 3, 5, 6, 100].map((a) => backoffDelay(b, a)), [1000, 2000, 4000, 16_000, 30_000, 30_000]);
  assert.equal(backoffDelay({ initialMs: 0, multiplier: 1, maxMs: 0 }, 3), 0);
});

test("group scripts are helpers.lua followed by their own file", () => {
  const s = scripts();
  const helpers = readFileSync(new URL("../../lua/helpers.lua", import.meta.url), "utf8");
  const claim = readFileSync(new URL("../../lua/claim.lua", import.meta.url), "utf8");
  assert.equal(s.claim.source, helpers + claim);
  assert.equal(s.claim.sha, new Script("x", helpers + claim).sha);
  assert.match(s.publish.source, /XADD/);
});
