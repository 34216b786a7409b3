import { Redis } from "ioredis";
import { Keyway } from "@keyway/client";
import { Outcome } from "@keyway/client/gen/keyway/runway/messagequeue_pb";
import { mergeSignalConsumer, mergeSignalProducer } from "@keyway/client/gen/topics";

const keyway = new Keyway(new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379"));
const result = { id: "payments/batch/1", queueName: "payments", outcome: Outcome.SUCCEEDED };
await mergeSignalProducer(keyway).publish(result, { id: "payments/batch/1/answer", partitionKey: "payments" });
const dashboard = mergeSignalConsumer(keyway, { group: "dashboard" }, (merged, delivery) => {
  console.log(merged.id, Outcome[merged.outcome], `attempt ${delivery.attempt}`);
  void dashboard.stop().then(() => keyway.redis.quit());
});
await dashboard.run();
