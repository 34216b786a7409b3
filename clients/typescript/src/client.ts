// The client: where topics live on Redis, and publishing to them.

import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { create, toJsonString } from "@bufbuild/protobuf";
import type { Cluster, Redis } from "ioredis";

import type { Delivery } from "./consumer.js";
import { ConfigError, transportError } from "./errors.js";
import { stage, type Staged } from "./outbox.js";
import {
  BUCKETS_MAX,
  DEAD_LETTER_SUFFIX,
  bucketOf,
  bucketStream,
  byteOrder,
  checkVersion,
  dedupKey,
  isValidTopicName,
  streamKey,
} from "./protocol.js";
import { scripts } from "./scripts.js";
import type { Topic } from "./topic.js";

/** Where a topic's messages live: its stream and how many buckets it is spread over. */
export interface TopicPlacement {
  /** The stream name. Default: the topic key. */
  stream?: string;
  /** How many streams (`<stream>#0` … `#<n-1>`) the topic is spread over. Default 1. */
  buckets?: number;
}

/** Options of a [`Keyway`] client; the defaults are the Rust runtime's. */
export interface KeywayOptions {
  /** Prefix of every key. Default `kw` (`redis.key_prefix`). */
  keyPrefix?: string;
  /** Topic key → stream name or placement (`[topics]`). Unlisted keys are their own stream. */
  topics?: Record<string, string | TopicPlacement>;
  /** How long publish remembers (topic, partition key, id), in ms. Default 24 h. */
  dedupTtlMs?: number;
  /** How many replicas a publish waits for (`WAIT`). Default 0. */
  waitReplicas?: number;
  /** How long a publish waits for them, in ms. Default 1000. */
  waitTimeoutMs?: number;
  /** How often a consume loop trims its stream and looks after its group, in ms. Default 10 s. */
  trimIntervalMs?: number;
  /** Consumers idle this long with nothing pending are removed from their group, in ms. Default 1 h. */
  consumerIdleRemovalMs?: number;
  /** How long stopping a consumer waits for handlers in flight before releasing them, in ms. Default 30 s. */
  shutdownDeadlineMs?: number;
}

const DAY = 86_400_000;

/** Check that `value` is an integer in `[min, max]`, naming `key` when it is not. */
export function checkRange(key: string, value: number, min: number, max: number): number {
  if (!Number.isFinite(value) || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(key, `expected an integer from ${min} to ${max}, found ${value}`);
  }
  return value;
}

/** What publishing did: stored (with its stream entry id), or dropped as a duplicate. */
export type PublishReceipt = { status: "published"; entry: string } | { status: "duplicate" };

/** How to publish one message. */
export interface PublishOptions {
  /** The message id; publishing is idempotent on (topic, partition key, id). */
  id: string;
  /** Messages of one partition key are handled one at a time, in publish order. */
  partitionKey: string;
  /** String metadata (`m:<key>` fields). */
  metadata?: Record<string, string>;
}

/** An ioredis connection: to one server (`Redis`) or to a Redis Cluster (`Cluster`). */
export type RedisConnection = Redis | Cluster;

/** A connection to Keyway's queues on one Redis server or a Redis Cluster, through ioredis. */
export class Keyway {
  readonly keyPrefix: string;
  readonly dedupTtlMs: number;
  readonly waitReplicas: number;
  readonly waitTimeoutMs: number;
  readonly trimIntervalMs: number;
  readonly consumerIdleRemovalMs: number;
  readonly shutdownDeadlineMs: number;
  readonly #placements = new Map<string, { stream: string; buckets: number }>();
  readonly #compatible = new Set<string>();

  constructor(
    readonly redis: RedisConnection,
    options: KeywayOptions = {},
  ) {
    this.keyPrefix = options.keyPrefix ?? "kw";
    if (this.keyPrefix === "") throw new ConfigError("keyPrefix", "must not be empty");
    this.dedupTtlMs = checkRange("dedupTtlMs", options.dedupTtlMs ?? DAY, 1000, 365 * DAY);
    this.waitReplicas = checkRange("waitReplicas", options.waitReplicas ?? 0, 0, 16);
    this.waitTimeoutMs = checkRange("waitTimeoutMs", options.waitTimeoutMs ?? 1000, 1, 60_000);
    this.trimIntervalMs = checkRange("trimIntervalMs", options.trimIntervalMs ?? 10_000, 10, DAY);
    this.consumerIdleRemovalMs = checkRange(
      "consumerIdleRemovalMs",
      options.consumerIdleRemovalMs ?? 3_600_000,
      1000,
      365 * DAY,
    );
    this.shutdownDeadlineMs = checkRange("shutdownDeadlineMs", options.shutdownDeadlineMs ?? 30_000, 0, 3_600_000);
    const streams = new Map<string, string>();
    for (const [key, placement] of Object.entries(options.topics ?? {})) {
      const at = `topics.${key}`;
      if (!isValidTopicName(key)) throw new ConfigError(at, "the topic key is not a valid topic name ([a-z0-9_-]{1,255})");
      const p = typeof placement === "string" ? { stream: placement } : placement;
      const stream = p.stream ?? key;
      if (!isValidTopicName(stream)) {
        throw new ConfigError(at, `stream name ${JSON.stringify(stream)} is not a valid topic name ([a-z0-9_-]{1,255})`);
      }
      const other = streams.get(stream);
      if (other !== undefined) {
        throw new ConfigError(at, `stream ${JSON.stringify(stream)} is already the stream of topic key ${JSON.stringify(other)}`);
      }
      streams.set(stream, key);
      const buckets = checkRange(`${at}.buckets`, p.buckets ?? 1, 1, BUCKETS_MAX);
      this.#placements.set(key, { stream, buckets });
    }
  }

  #placement(key: string): { stream: string; suffix: string; buckets: number } {
    const direct = this.#placements.get(key);
    if (direct) return { ...direct, suffix: "" };
    if (key.endsWith(DEAD_LETTER_SUFFIX) && key.length > DEAD_LETTER_SUFFIX.length) {
      const base = this.#placement(key.slice(0, -DEAD_LETTER_SUFFIX.length));
      return { ...base, suffix: base.suffix + DEAD_LETTER_SUFFIX };
    }
    if (!isValidTopicName(key)) {
      throw new ConfigError("topic", `${JSON.stringify(key)} is not a valid topic key ([a-z0-9_-]{1,255})`);
    }
    return { stream: key, suffix: "", buckets: 1 };
  }

  /** Every stream of topic `key`, one per bucket (a dead-letter key: its topic's, with `_dlq`). */
  streams(key: string): string[] {
    const { stream, suffix, buckets } = this.#placement(key);
    return Array.from({ length: buckets }, (_, b) => bucketStream(stream, buckets, b) + suffix);
  }

  /** The stream a message of topic `key` with `partitionKey` goes to. */
  streamFor(key: string, partitionKey: string): string {
    const streams = this.streams(key);
    return streams[bucketOf(partitionKey, streams.length)]!;
  }

  /** Publish an encoded payload on topic `key`, idempotently on (key, partition key, id). */
  async publishRaw(key: string, payload: Uint8Array, options: PublishOptions): Promise<PublishReceipt> {
    return this.publishAddressed(await this.address(key, payload, options));
  }

  /** Where a payload for topic `key` goes (its stream checked for its protocol version). */
  async address(key: string, payload: Uint8Array, options: PublishOptions): Promise<Staged> {
    if (typeof options.id !== "string" || options.id === "") {
      throw new ConfigError("id", "a message id must not be empty");
    }
    if (typeof options.partitionKey !== "string") {
      throw new ConfigError("partitionKey", "must be a string");
    }
    const stream = this.streamFor(key, options.partitionKey);
    const sKey = streamKey(this.keyPrefix, stream);
    await this.ensureCompatible(sKey);
    const flat: string[] = [];
    const metadata = options.metadata ?? {};
    for (const k of byteOrder(Object.keys(metadata))) {
      const v = metadata[k];
      if (typeof v !== "string") throw new ConfigError(`metadata.${k}`, "must be a string");
      flat.push(k, v);
    }
    return {
      topic: key,
      streamKey: sKey,
      dedupKey: dedupKey(this.keyPrefix, stream, options.partitionKey, options.id),
      id: options.id,
      partitionKey: options.partitionKey,
      payload,
      metadata: flat,
    };
  }

  /** Publish an addressed message with the publish script (and `WAIT`, when asked to). */
  async publishAddressed(m: Staged): Promise<PublishReceipt> {
    const args: Array<string | number | Uint8Array> = [this.dedupTtlMs, m.id, m.partitionKey, m.payload, ...m.metadata];
    let reply: unknown;
    try {
      reply = await scripts().publish.run(this.redis, [m.streamKey, m.dedupKey], args);
    } catch (e) {
      throw transportError(`publishing on ${JSON.stringify(m.topic)}`, e);
    }
    // A duplicate too: the first write may be this publisher's own, whose reply was lost.
    await this.#waitReplicated(m.streamKey);
    if (reply === 0) return { status: "duplicate" };
    if (Buffer.isBuffer(reply)) return { status: "published", entry: reply.toString() };
    throw transportError(`publishing on ${JSON.stringify(m.topic)}`, new Error("unexpected reply to the publish script"));
  }

  async #waitReplicated(key: string): Promise<void> {
    if (this.waitReplicas === 0) return;
    let acked: unknown;
    try {
      acked = await this.redis.call("WAIT", this.waitReplicas, this.waitTimeoutMs);
    } catch (e) {
      throw transportError(`waiting for replicas of ${key}`, e);
    }
    if (typeof acked !== "number" || acked < this.waitReplicas) {
      throw transportError(
        `waiting for replicas of ${key}`,
        new Error(`reached ${String(acked)} of ${this.waitReplicas} replicas within ${this.waitTimeoutMs} ms; it may not survive a failover`),
      );
    }
  }

  /**
   * Refuse a stream whose newest entry was written by a protocol version this client does not
   * speak; checked once per stream key and client.
   */
  async ensureCompatible(key: string): Promise<void> {
    if (this.#compatible.has(key)) return;
    let newest: unknown;
    try {
      newest = await this.redis.callBuffer("XREVRANGE", key, "+", "-", "COUNT", "1");
    } catch (e) {
      throw transportError(`reading the newest entry of ${key}`, e);
    }
    const entry = Array.isArray(newest) ? newest[0] : undefined;
    if (Array.isArray(entry) && Buffer.isBuffer(entry[0]) && Array.isArray(entry[1])) {
      const flat = entry[1] as Buffer[];
      const fields: Array<[Buffer, Buffer]> = [];
      for (let i = 0; i + 1 < flat.length; i += 2) fields.push([flat[i]!, flat[i + 1]!]);
      const problem = checkVersion(key, entry[0].toString(), fields);
      if (problem) throw problem;
    }
    this.#compatible.add(key);
  }

  /** A producer of `topic`'s message. */
  producer<Desc extends DescMessage>(topic: Topic<Desc>): Producer<Desc> {
    return new Producer(this, topic);
  }
}

/** Publishes only `topic`'s message on its key, as protobuf JSON with proto field names. */
export class Producer<Desc extends DescMessage> {
  constructor(
    readonly client: Keyway,
    readonly topic: Topic<Desc>,
  ) {}

  /** Encode `message` (a message of the topic's schema, or its fields) and publish it. */
  async publish(message: MessageInitShape<Desc>, options: PublishOptions): Promise<PublishReceipt> {
    return this.client.publishRaw(this.topic.key, this.#encode(message), options);
  }

  /**
   * Publish `message` with `delivery`'s ack (a transactional outbox): it goes out only if the
   * handler acks, on one server in the same script as the ack (`docs/wire-protocol.md` §6.3),
   * in the order staged. Dropped when the handler retries, rejects or postpones: the
   * redelivery stages it again. What can be checked now (the options, the stream's protocol
   * version) throws here.
   */
  async publishOnAck(delivery: Delivery, message: MessageInitShape<Desc>, options: PublishOptions): Promise<void> {
    stage(delivery, await this.client.address(this.topic.key, this.#encode(message), options));
  }

  #encode(message: MessageInitShape<Desc>): Uint8Array {
    const json = toJsonString(this.topic.schema, create(this.topic.schema, message), { useProtoFieldName: true });
    return new TextEncoder().encode(json);
  }
}
