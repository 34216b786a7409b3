// Keyway's queues from TypeScript: publish to and consume from the Redis Streams a Keyway
// deployment runs on, with the same atomic scripts as the Rust runtime.

export { Keyway, Producer } from "./client.js";
export type { KeywayOptions, PublishOptions, PublishReceipt, RedisConnection, TopicPlacement } from "./client.js";
export { Consumer, ack, backoffDelay, postpone, reject, retry } from "./consumer.js";
export type { Backoff, Delivery, Handler, Outcome, SubscriptionOptions } from "./consumer.js";
export { ConfigError, PermanentError, RetryableError, TransportError } from "./errors.js";
export type { Detail } from "./errors.js";
export { PROTOCOL_VERSION, ProtocolVersionError, bucketOf, fnv1a64, readEnvelope } from "./protocol.js";
export type { Envelope } from "./protocol.js";
export { defineTopic, deadLetters } from "./topic.js";
export type { Topic } from "./topic.js";
