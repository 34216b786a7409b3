// A dashboard for the cross-language test: consumes `merge-signal` in a group of its own and
// prints each result once, until it has seen as many batches as it is told.
//
//   REDIS_URL=redis://127.0.0.1:6400 node dist/test/cross/watch-merge-signal.js 50

import { Redis } from "ioredis";
import { Keyway } from "../../src/index.js";
import { Outcome } from "../../src/gen/keyway/runway/messagequeue_pb.js";
import { mergeSignalConsumer } from "../../src/gen/topics.js";

const want = Number(process.argv[2]);
if (!Number.isInteger(want) || want < 1) {
  process.stderr.write(`watch-merge-signal: expected a count of batches, found ${process.argv[2]}\n`);
  process.exit(2);
}
const keyway = new Keyway(new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379"));
const seen = new Set<string>();
const dashboard = mergeSignalConsumer(keyway, { group: "ts-dashboard", batchSize: 50 }, (result) => {
  if (!seen.has(result.id)) {
    seen.add(result.id);
    console.log(`result ${result.id} ${Outcome[result.outcome]} ${Date.now()}`);
  }
  if (seen.size >= want) void dashboard.stop().then(() => keyway.redis.quit());
});
await dashboard.run();
