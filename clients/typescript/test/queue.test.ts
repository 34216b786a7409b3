// Publishing and consuming on a real redis-server: dedup, per-key order, every outcome, dead
// letters and the protocol version.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { Redis } from "ioredis";
import {
  Consumer,
  Keyway,
  PermanentError,
  ProtocolVersionError,
  RetryableError,
  deadLetters,
  defineTopic,
  postpone,
  reject,
  retry,
  type Delivery,
  type SubscriptionOptions,
} from "../src/index.js";
import { MergeResultSchema, Outcome } from "../src/gen/keyway/runway/messagequeue_pb.js";
import { eventually, pairs, quiet, startRedis, type TestRedis } from "./redis.js";

let server: TestRedis;
let redis: Redis;
let prefixes = 0;

before(async () => {
  server = await startRedis();
  redis = server.client();
});
after(async () => {
  await server.stop();
});

/** A client with a key prefix of its own, so tests on one server do not meet. */
function client(options: ConstructorParameters<typeof Keyway>[1] = {}): Keyway {
  prefixes += 1;
  return new Keyway(redis, { keyPrefix: `t${prefixes}`, trimIntervalMs: 50, shutdownDeadlineMs: 2000, ...options });
}

const results = defineTopic("merge-signal", MergeResultSchema);
const fast = { initialMs: 5, multiplier: 2, maxMs: 20 };

async function entries(key: string): Promise<Array<[string, Array<[string, string]>]>> {
  const raw = (await redis.call("XRANGE", key, "-", "+")) as Array<[string, string[]]>;
  return raw.map(([id, flat]) => [id, pairs(flat)]);
}

test("publish is idempotent on topic, partition key and id, and writes the documented fields", async () => {
  const kw = client();
  const producer = kw.producer(results);
  const first = await producer.publish(
    { id: "q/batch/1", queueName: "q", outcome: Outcome.SUCCEEDED },
    { id: "q/batch/1/answer", partitionKey: "q", metadata: { trace: "t-1", a: "first" } },
  );
  assert.equal(first.status, "published");
  const again = await producer.publish({ id: "q/batch/1" }, { id: "q/batch/1/answer", partitionKey: "q" });
  assert.deepEqual(again, { status: "duplicate" });
  // Another partition key is another message.
  const other = await producer.publish({ id: "x" }, { id: "q/batch/1/answer", partitionKey: "r" });
  assert.equal(other.status, "published");
  const stored = await entries(`${kw.keyPrefix}:{merge-signal}:s:merge-signal`);
  assert.equal(stored.length, 2);
  const [entry, fields] = stored[0]!;
  assert.equal(first.status === "published" && first.entry, entry);
  const names = fields.map(([k]) => k);
  assert.deepEqual(names.slice(0, 4), ["id", "pk", "at", "payload"]);
  // Metadata in key order, as the Rust runtime writes it.
  assert.deepEqual(names.filter((n) => n.startsWith("m:")), ["m:a", "m:trace"]);
  const field = new Map(fields);
  assert.equal(field.get("payload"), '{"id":"q/batch/1","outcome":"SUCCEEDED","queue_name":"q"}');
  assert.ok(Math.abs(Number(field.get("at")) - Date.now()) < 60_000);
  const ttl = await redis.pttl(`${kw.keyPrefix}:{merge-signal}:d:merge-signal:1:q:q/batch/1/answer`);
  assert.ok(ttl > 86_000_000 && ttl <= 86_400_000, `dedup TTL ${ttl}`);
  await assert.rejects(producer.publish({}, { id: "", partitionKey: "q" }), /id: a message id must not be empty/);
});

test("a topic in buckets sends each key to the bucket FNV-1a picks", async () => {
  const kw = client({ topics: { "merge-signal": { buckets: 4 } } });
  await kw.producer(results).publish({ id: "1" }, { id: "m-1", partitionKey: "a" });
  assert.equal(await redis.xlen(`${kw.keyPrefix}:{merge-signal#0}:s:merge-signal#0`), 1);
  for (const b of [1, 2, 3]) assert.equal(await redis.xlen(`${kw.keyPrefix}:{merge-signal#${b}}:s:merge-signal#${b}`), 0);
  // The consumer reads every bucket.
  const seen: string[] = [];
  const producer = kw.producer(results);
  for (const pk of ["b", "c", "d", "e"]) await producer.publish({ id: pk }, { id: `m-${pk}`, partitionKey: pk });
  const consumer = new Consumer(kw, results, { group: "g", logger: quiet() }, (m) => void seen.push(m.id));
  const running = consumer.run();
  await eventually("every bucket's messages", () => seen.length === 5);
  await consumer.stop();
  await running;
  assert.deepEqual([...seen].sort(), ["1", "b", "c", "d", "e"]);
});

test("messages of one partition key are handled one at a time, in publish order", async () => {
  const kw = client();
  const producer = kw.producer(results);
  const keys = ["k1", "k2", "k3"];
  for (let i = 0; i < 30; i++) {
    const pk = keys[i % 3]!;
    await producer.publish({ id: `${pk}-${i}` }, { id: `m-${i}`, partitionKey: pk });
  }
  const order = new Map<string, number[]>();
  const busy = new Set<string>();
  let overlaps = 0;
  let concurrent = 0;
  let most = 0;
  const handler = async (m: { id: string }, d: Delivery) => {
    if (busy.has(d.partitionKey)) overlaps += 1;
    busy.add(d.partitionKey);
    concurrent += 1;
    most = Math.max(most, concurrent);
    await new Promise((r) => setTimeout(r, Math.random() * 5));
    const list = order.get(d.partitionKey) ?? [];
    list.push(Number(m.id.split("-")[1]));
    order.set(d.partitionKey, list);
    busy.delete(d.partitionKey);
    concurrent -= 1;
  };
  // Two consumers of one group, as two processes would be.
  const a = new Consumer(kw, results, { group: "g", batchSize: 4, logger: quiet() }, handler);
  const b = new Consumer(kw, results, { group: "g", batchSize: 4, logger: quiet() }, handler);
  const runs = [a.run(), b.run()];
  await eventually("30 deliveries", () => [...order.values()].reduce((n, l) => n + l.length, 0) === 30);
  await Promise.all([a.stop(), b.stop()]);
  await Promise.all(runs);
  assert.equal(overlaps, 0);
  assert.ok(most > 1, "different keys ran in parallel");
  for (const [pk, list] of order) {
    assert.deepEqual(list, [...list].sort((x, y) => x - y), `order of ${pk}`);
    assert.equal(list.length, 10);
  }
});

/** Run a consumer until `done` holds, then stop it. */
async function consume(
  kw: Keyway,
  options: Omit<SubscriptionOptions, "logger">,
  handler: ConstructorParameters<typeof Consumer<typeof MergeResultSchema>>[3],
  done: () => boolean | Promise<boolean>,
  what: string,
): Promise<void> {
  const consumer = new Consumer(kw, results, { ...options, logger: quiet() }, handler);
  const running = consumer.run();
  await eventually(what, done);
  await consumer.stop();
  await running;
}

test("what a handler publishes with its ack goes out with the ack, in order, and only then", async () => {
  const kw = client();
  const shipped = defineTopic("merge-conflict-check-signal", MergeResultSchema);
  const ship = kw.producer(shipped);
  await ship.publish({ id: "s-0" }, { id: "s-0", partitionKey: "s" });
  const producer = kw.producer(results);
  for (const id of ["r-1", "r-2", "r-3"]) await producer.publish({ id }, { id, partitionKey: "k" });
  const seen: Array<[string, number]> = [];
  let late: unknown;
  let kept: Delivery | undefined;
  const handler = async (_: unknown, d: Delivery) => {
    seen.push([d.id, d.attempt]);
    if (d.id === "r-1" && d.attempt === 1) {
      await ship.publishOnAck(d, { id: "s-1" }, { id: "s-1", partitionKey: "s" });
      return retry("not yet");
    }
    if (d.id === "r-1") {
      for (const id of ["s-0", "s-1", "s-2"]) {
        await ship.publishOnAck(d, { id }, { id, partitionKey: "s", metadata: { by: d.id } });
      }
      kept = d;
      return undefined;
    }
    if (d.id === "r-2") {
      await ship.publishOnAck(d, { id: "s-3" }, { id: "s-3", partitionKey: "s" });
      return reject("no");
    }
    // r-1 was settled before r-3, its key's next message, was handed out.
    late = await ship.publishOnAck(kept!, { id: "s-4" }, { id: "s-4", partitionKey: "s" }).catch((e: unknown) => e);
    return undefined;
  };
  await consume(kw, { group: "g", backoff: fast }, handler, () => seen.some(([id]) => id === "r-3"), "r-3");
  const stored = await entries(`${kw.keyPrefix}:{merge-conflict-check-signal}:s:merge-conflict-check-signal`);
  assert.deepEqual(
    stored.map(([, f]) => new Map(f).get("id")),
    ["s-0", "s-1", "s-2"],
    "the acked attempt's messages in order, the duplicate dropped, none of a retried or rejected attempt",
  );
  assert.equal(new Map(stored[1]![1]).get("m:by"), "r-1");
  assert.deepEqual(seen.filter(([id]) => id === "r-1").map(([, a]) => a), [1, 2]);
  assert.match(String(late), /delivery: is not a delivery being handled/);
});

test("ack, retry with backoff, postpone and reject settle as the Rust runtime does", async () => {
  const kw = client();
  const producer = kw.producer(results);
  for (const id of ["ack", "retry", "postpone", "reject", "throw", "fail-always"]) {
    await producer.publish({ id }, { id, partitionKey: id });
  }
  const attempts = new Map<string, number[]>();
  const times = new Map<string, number[]>();
  const settled = new Set<string>();
  await consume(
    kw,
    { group: "g", backoff: fast, maxAttempts: 3 },
    (m, d) => {
      attempts.set(m.id, [...(attempts.get(m.id) ?? []), d.attempt]);
      times.set(m.id, [...(times.get(m.id) ?? []), Date.now()]);
      const n = attempts.get(m.id)!.length;
      switch (m.id) {
        case "retry":
          if (n < 2) return retry("not yet");
          break;
        case "postpone":
          if (n < 3) return postpone(30);
          break;
        case "reject":
          settled.add(m.id);
          return reject("no such batch", { batch: "q/batch/9" });
        case "throw":
          settled.add(m.id);
          throw new PermanentError("bad input", { field: "id" });
        case "fail-always":
          if (n === 3) settled.add(m.id);
          throw new RetryableError("still down");
      }
      settled.add(m.id);
      return undefined;
    },
    async () => settled.size === 6 && (await redis.xlen(`${kw.keyPrefix}:{merge-signal}:s:merge-signal_dlq`)) === 3,
    "every message settled",
  );
  assert.deepEqual(attempts.get("ack"), [1]);
  // A nack counts an attempt; a postponement does not.
  assert.deepEqual(attempts.get("retry"), [1, 2]);
  assert.deepEqual(attempts.get("postpone"), [1, 1, 1]);
  const p = times.get("postpone")!;
  assert.ok(p[1]! - p[0]! >= 25 && p[2]! - p[1]! >= 25, `postponed by 30 ms: ${p}`);
  assert.deepEqual(attempts.get("reject"), [1]);
  assert.deepEqual(attempts.get("fail-always"), [1, 2, 3]);
  const dead = await entries(`${kw.keyPrefix}:{merge-signal}:s:merge-signal_dlq`);
  const byId = new Map(dead.map(([, f]) => [new Map(f).get("id"), new Map(f)]));
  const rejected = byId.get("reject")!;
  assert.equal(rejected.get("m:dlq.original_topic"), "merge-signal");
  assert.equal(rejected.get("m:dlq.failure_count"), "1");
  assert.equal(rejected.get("m:dlq.last_error"), "no such batch");
  assert.equal(rejected.get("m:dlq.detail.batch"), "q/batch/9");
  assert.match(rejected.get("m:dlq.stream_entry")!, /^\d+-\d+$/);
  assert.equal(rejected.get("payload"), '{"id":"reject"}');
  assert.equal(byId.get("throw")!.get("m:dlq.last_error"), "bad input");
  assert.equal(byId.get("throw")!.get("m:dlq.detail.field"), "id");
  const exhausted = byId.get("fail-always")!;
  assert.equal(exhausted.get("m:dlq.failure_count"), "3");
  assert.equal(exhausted.get("m:dlq.last_error"), "still down");
  // Every group state is cleaned up once settled.
  for (const part of ["heads", "due", "held", "attempts", "errors", "pks"]) {
    assert.equal(await redis.exists(`${kw.keyPrefix}:{merge-signal}:g:merge-signal:g:${part}`), 0, part);
  }
});

test("a payload that does not decode and an unreadable entry are dead-lettered without the handler", async () => {
  const kw = client();
  const stream = `${kw.keyPrefix}:{merge-signal}:s:merge-signal`;
  await kw.publishRaw("merge-signal", new TextEncoder().encode('{"outcome": 5.5}'), { id: "poison", partitionKey: "q" });
  await redis.xadd(stream, "*", "id", "raw-1", "pk", "q", "payload", "{}");
  let called = 0;
  await consume(
    kw,
    { group: "g" },
    () => void (called += 1),
    async () => (await redis.xlen(`${stream}_dlq`)) === 2,
    "two dead letters",
  );
  assert.equal(called, 0);
  const dead = (await entries(`${stream}_dlq`)).map(([, f]) => new Map(f));
  const poison = dead.find((f) => f.get("id") === "poison")!;
  assert.match(poison.get("m:dlq.last_error")!, /^payload does not decode as keyway\.runway\.messagequeue\.MergeResult: /);
  assert.equal(poison.get("m:dlq.detail.kind"), "decode");
  assert.equal(poison.get("m:dlq.detail.message"), "keyway.runway.messagequeue.MergeResult");
  const malformed = dead.find((f) => f.get("id")!.startsWith("malformed:"))!;
  assert.equal(malformed.get("m:dlq.malformed"), "1");
  assert.equal(malformed.get("m:dlq.last_error"), "malformed stream entry: no `at` field");
  assert.equal(malformed.get("m:dlq.detail.kind"), "malformed");
  assert.equal(malformed.get("raw:id"), "raw-1");
});

test("a dead-letter consumer reads dead letters with their metadata", async () => {
  const kw = client();
  await kw.producer(results).publish({ id: "q/batch/2" }, { id: "d-1", partitionKey: "q" });
  await consume(kw, { group: "g" }, () => reject("gone"), async () =>
    (await redis.xlen(`${kw.keyPrefix}:{merge-signal}:s:merge-signal_dlq`)) === 1, "a dead letter");
  const seen: Array<[string, Record<string, string>]> = [];
  const dlq = new Consumer(kw, deadLetters(results), { group: "r", preset: "dead-letter-consumer", logger: quiet() }, (m, d) =>
    void seen.push([m.id, { ...d.metadata }]),
  );
  const running = dlq.run();
  await eventually("the dead letter", () => seen.length === 1);
  await dlq.stop();
  await running;
  assert.equal(seen[0]![0], "q/batch/2");
  assert.equal(seen[0]![1]["dlq.last_error"], "gone");
  assert.equal(seen[0]![1]["dlq.original_topic"], "merge-signal");
});

test("a visibility timeout hands a stuck delivery to another consumer, fencing the late settle", async () => {
  const kw = client();
  await kw.producer(results).publish({ id: "slow" }, { id: "s-1", partitionKey: "q" });
  const attempts: number[] = [];
  let release: () => void = () => undefined;
  const stuck = new Promise<void>((r) => (release = r));
  const logger = quiet();
  const first = new Consumer(kw, results, { group: "g", visibilityTimeoutMs: 100, logger }, async (_m, d) => {
    attempts.push(d.attempt);
    if (d.attempt === 1) await stuck;
  });
  const runs = [first.run()];
  await eventually("the first attempt", () => attempts.length === 1);
  const second = new Consumer(kw, results, { group: "g", visibilityTimeoutMs: 100, logger: quiet() }, (_m, d) => void attempts.push(d.attempt));
  runs.push(second.run());
  await eventually("the redelivery", () => attempts.length === 2, 5000);
  release();
  await eventually("the late settle refused", () => logger.lines.some((l) => l.includes("reclaimed by another consumer")));
  await Promise.all([first.stop(), second.stop()]);
  await Promise.all(runs);
  assert.deepEqual(attempts, [1, 2]);
  assert.equal(await redis.xlen(`${kw.keyPrefix}:{merge-signal}:s:merge-signal_dlq`), 0);
});

test("a stream written by another protocol version is refused, naming the entry and version", async () => {
  const kw = client();
  const stream = `${kw.keyPrefix}:{merge-signal}:s:merge-signal`;
  const entry = await redis.xadd(stream, "*", "id", "new", "pk", "q", "at", "1", "payload", "{}", "v", "2");
  await assert.rejects(
    kw.producer(results).publish({ id: "x" }, { id: "x", partitionKey: "q" }),
    (e: unknown) =>
      e instanceof ProtocolVersionError &&
      e.message === `stream ${stream}: entry ${entry} was written by protocol version 2; this client speaks version 1`,
  );
  const consumer = new Consumer(kw, results, { group: "g", logger: quiet() }, () => undefined);
  await assert.rejects(consumer.run(), ProtocolVersionError);
  assert.equal(await redis.xlen(stream), 1);
});

test("an entry of another protocol version met while consuming stops the loop and stays pending", async () => {
  const kw = client();
  const stream = `${kw.keyPrefix}:{merge-signal}:s:merge-signal`;
  const seen: string[] = [];
  const consumer = new Consumer(kw, results, { group: "g", logger: quiet() }, (m) => void seen.push(m.id));
  const running = consumer.run();
  await kw.producer(results).publish({ id: "old" }, { id: "o", partitionKey: "q" });
  await eventually("the compatible entry", () => seen.length === 1);
  const entry = await redis.xadd(stream, "*", "id", "new", "pk", "r", "at", "1", "payload", "{}", "v", "9");
  await assert.rejects(running, (e: unknown) => e instanceof ProtocolVersionError && e.entry === entry && e.version === "9");
  const pending = (await redis.call("XPENDING", stream, "g")) as [number, ...unknown[]];
  assert.equal(pending[0], 1);
  assert.deepEqual(seen, ["old"]);
  assert.equal(await redis.xlen(`${stream}_dlq`), 0);
});

test("bad subscription options are refused, naming the option", () => {
  const kw = client();
  const make = (o: object) => new Consumer(kw, results, { group: "g", ...o }, () => undefined);
  assert.throws(() => make({ group: "Bad Group" }), /group: "Bad Group" is not a valid name/);
  assert.throws(() => make({ batchSize: 0 }), /batchSize: expected an integer from 1 to 1000000, found 0/);
  assert.throws(() => make({ visibilityTimeoutMs: 1 }), /visibilityTimeoutMs: expected an integer from 10/);
  assert.throws(() => make({ backoff: { multiplier: 0.5 } }), /backoff\.multiplier: expected a number from 1 to 100/);
  assert.throws(() => make({ preset: "other" }), /unknown preset "other"/);
});
