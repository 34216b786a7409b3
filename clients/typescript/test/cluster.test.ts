// The client on a Redis Cluster (3 masters, 3 replicas) that `tests/clients_typescript.rs`
// starts and names in KEYWAY_TEST_CLUSTER (`host:port` of one node); skipped, saying so,
// without it. Each stream is its own slot there: what a handler publishes with its ack goes out
// just before the ack.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Cluster } from "ioredis";
import { Consumer, Keyway, defineTopic, retry, type Delivery } from "../src/index.js";
import { MergeResultSchema } from "../src/gen/keyway/runway/messagequeue_pb.js";
import { eventually, pairs, quiet } from "./redis.js";

const node = process.env.KEYWAY_TEST_CLUSTER;
const skip = node === undefined ? "KEYWAY_TEST_CLUSTER is set by tests/clients_typescript.rs" : false;

test("publishing and consuming on a cluster, with messages published with the ack", { skip }, async () => {
  const [host, port] = node!.split(":");
  const cluster = new Cluster([{ host: host!, port: Number(port) }]);
  try {
    const kw = new Keyway(cluster, { keyPrefix: `ts${process.pid}`, trimIntervalMs: 50, shutdownDeadlineMs: 2000 });
    const results = defineTopic("merge-signal", MergeResultSchema);
    const shipped = defineTopic("merge-conflict-check-signal", MergeResultSchema);
    const producer = kw.producer(results);
    const ship = kw.producer(shipped);
    for (const id of ["r-1", "r-2", "r-3"]) await producer.publish({ id }, { id, partitionKey: "k" });
    const seen: Array<[string, number]> = [];
    const handler = async (_: unknown, d: Delivery) => {
      seen.push([d.id, d.attempt]);
      if (d.id === "r-1") {
        await ship.publishOnAck(d, { id: "s-1" }, { id: "s-1", partitionKey: "s" });
        if (d.attempt === 1) return retry("not yet");
      }
      if (d.id === "r-2") await producer.publishOnAck(d, { id: "echo" }, { id: "echo", partitionKey: "e" });
      return undefined;
    };
    const consumer = new Consumer(kw, results, { group: "g", backoff: { initialMs: 5, multiplier: 2, maxMs: 20 }, logger: quiet() }, handler);
    const running = consumer.run();
    await eventually("r-3 and the echo", () => seen.some(([id]) => id === "r-3") && seen.some(([id]) => id === "echo"), 20_000);
    await consumer.stop();
    await running;
    const key = `${kw.keyPrefix}:{merge-conflict-check-signal}:s:merge-conflict-check-signal`;
    const stored = (await cluster.call("XRANGE", key, "-", "+")) as Array<[string, string[]]>;
    assert.deepEqual(
      stored.map(([, flat]) => new Map(pairs(flat)).get("id")),
      ["s-1"],
      "published once, by the acked attempt",
    );
    assert.deepEqual(seen.filter(([id]) => id === "r-1").map(([, a]) => a), [1, 2]);
    assert.equal(seen.filter(([id]) => id === "echo").length, 1);
  } finally {
    cluster.disconnect();
  }
});
