// Consuming: the consume loop that hands deliveries to a handler and settles each with the
// claim and settle scripts, as the Rust runtime's loop does.

import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { fromJson } from "@bufbuild/protobuf";

import { checkRange, type Keyway, type RedisConnection } from "./client.js";
import {
  ConfigError,
  PermanentError,
  RetryableError,
  TransportError,
  causedByRetryableTransport,
  transportError,
  type Detail,
} from "./errors.js";
import {
  byteOrder,
  checkVersion,
  groupKeys,
  isValidTopicName,
  readEnvelope,
  type GroupKeys,
  type ProtocolVersionError,
} from "./protocol.js";
import { openOutbox, takeOutbox, type Staged } from "./outbox.js";
import { scripts, type Script } from "./scripts.js";
import type { Topic } from "./topic.js";

/** A message as a consumer receives it. */
export interface Delivery {
  /** The topic key it was published on. */
  readonly topic: string;
  /** Its message id. */
  readonly id: string;
  /** Its partition key. */
  readonly partitionKey: string;
  /** Its metadata. */
  readonly metadata: Readonly<Record<string, string>>;
  /** When it was published, in ms since the epoch (the server's clock). */
  readonly publishedAtMs: number;
  /** Which attempt this is, from 1. */
  readonly attempt: number;
  /** The stream entry id. */
  readonly entry: string;
  /** The encoded payload (protobuf JSON). */
  readonly payload: Uint8Array;
  /** Keep the delivery from being handed to another consumer for one more visibility timeout. */
  extendVisibility(): Promise<void>;
}

/** How a handler settles a delivery. */
export type Outcome =
  | { readonly kind: "ack" }
  | { readonly kind: "postpone"; readonly delayMs: number }
  | { readonly kind: "retry"; readonly reason: string; readonly detail: Detail }
  | { readonly kind: "reject"; readonly reason: string; readonly detail: Detail };

/** Done. Returning nothing from a handler means the same. */
export function ack(): Outcome {
  return { kind: "ack" };
}

/** Not yet: deliver again after `delayMs`; not counted as an attempt, and later messages of the key wait. */
export function postpone(delayMs: number): Outcome {
  return { kind: "postpone", delayMs };
}

/** A retryable failure: delivered again after the backoff, dead-lettered when attempts run out. */
export function retry(reason: string, detail: Detail = {}): Outcome {
  return { kind: "retry", reason, detail };
}

/** A permanent failure: dead-lettered at once with `reason` and `detail`. */
export function reject(reason: string, detail: Detail = {}): Outcome {
  return { kind: "reject", reason, detail };
}

/**
 * Handles one decoded message. Return an [`Outcome`] (nothing is an ack), or throw: a
 * [`RetryableError`] retries, a [`PermanentError`] or any other error dead-letters, except
 * errors caused by a retryable transport failure, which retry.
 */
export type Handler<Desc extends DescMessage> = (
  message: MessageShape<Desc>,
  delivery: Delivery,
) => Outcome | void | Promise<Outcome | void>;

/** Retry backoff: `initialMs × multiplier^(attempt - 1)`, at most `maxMs`. */
export interface Backoff {
  /** After the first failure. Default 1000. */
  initialMs?: number;
  /** Growth per further failure. Default 2. */
  multiplier?: number;
  /** Cap. Default 30000. */
  maxMs?: number;
}

/** One subscription: a consumer group reading one topic. The defaults are the Rust runtime's. */
export interface SubscriptionOptions {
  /** The consumer group. Groups are independent: each sees every message. */
  group: string;
  /** `"dead-letter-consumer"`: no dead-letter stream, 1000 attempts, every error retried. */
  preset?: "dead-letter-consumer";
  /** Deliveries in flight at once. Default 10. */
  batchSize?: number;
  /** A delivery not settled (or extended) within this is redelivered, in ms. Default 60 s. */
  visibilityTimeoutMs?: number;
  /** Counted attempts before a retryable failure is dead-lettered. Default 3. */
  maxAttempts?: number;
  /** Delay before a retry. */
  backoff?: Backoff;
  /** Whether failures go to `<topic>_dlq`; when off they are dropped. Default on. */
  deadLetter?: boolean;
  /** Treat every failure as retryable. Default off. */
  retryEveryError?: boolean;
  /** Where warnings go. Default `console.warn`. */
  logger?: { warn(message: string): void };
}

interface Subscription {
  topic: string;
  group: string;
  batchSize: number;
  visibilityTimeoutMs: number;
  maxAttempts: number;
  backoff: Required<Backoff>;
  deadLetter: boolean;
  retryEveryError: boolean;
  logger: { warn(message: string): void };
}

const DAY = 86_400_000;
/** The longest delay handed to a script: a year. */
const MAX_DELAY_MS = 365 * DAY;
const IDLE_POLL_MS = 5000;
const POLL_MS = 1000;

function subscription(topic: string, options: SubscriptionOptions): Subscription {
  const at = `subscription to ${JSON.stringify(topic)}`;
  if (typeof options.group !== "string" || !isValidTopicName(options.group)) {
    throw new ConfigError(`${at}: group`, `${JSON.stringify(options.group)} is not a valid name ([a-z0-9_-]{1,255})`);
  }
  const preset = options.preset;
  if (preset !== undefined && preset !== "dead-letter-consumer") {
    throw new ConfigError(`${at}: preset`, `unknown preset ${JSON.stringify(preset)}; the one preset is "dead-letter-consumer"`);
  }
  const dlc = preset === "dead-letter-consumer";
  const count = (key: string, v: number | undefined, d: number) => checkRange(`${at}: ${key}`, v ?? d, 1, 1_000_000);
  const ms = (key: string, v: number | undefined, d: number, min: number, max: number) =>
    checkRange(`${at}: ${key}`, v ?? d, min, max);
  const multiplier = options.backoff?.multiplier ?? 2;
  if (!(multiplier >= 1 && multiplier <= 100)) {
    throw new ConfigError(`${at}: backoff.multiplier`, `expected a number from 1 to 100, found ${multiplier}`);
  }
  return {
    topic,
    group: options.group,
    batchSize: count("batchSize", options.batchSize, 10),
    visibilityTimeoutMs: ms("visibilityTimeoutMs", options.visibilityTimeoutMs, 60_000, 10, 7 * DAY),
    maxAttempts: count("maxAttempts", options.maxAttempts, dlc ? 1000 : 3),
    backoff: {
      initialMs: ms("backoff.initialMs", options.backoff?.initialMs, 1000, 0, DAY),
      multiplier,
      maxMs: ms("backoff.maxMs", options.backoff?.maxMs, 30_000, 0, DAY),
    },
    deadLetter: options.deadLetter ?? !dlc,
    retryEveryError: options.retryEveryError ?? dlc,
    logger: options.logger ?? console,
  };
}

/** The backoff before retrying after `failures` failed attempts, in ms. */
export function backoffDelay(backoff: Required<Backoff>, failures: number): number {
  const exp = Math.min(Math.max(failures - 1, 0), 64);
  const delay = backoff.initialMs * backoff.multiplier ** exp;
  if (!Number.isFinite(delay) || delay >= backoff.maxMs) return backoff.maxMs;
  return Math.floor(Math.max(delay, 0));
}

function delayArg(ms: number): number {
  return Math.floor(Math.min(Math.max(Number.isFinite(ms) ? ms : MAX_DELAY_MS, 0), MAX_DELAY_MS));
}

/** A delivery as the claim and recover scripts hand it out. */
interface Claimed {
  entry: string;
  epoch: string;
  attempt: number;
  fields: Array<[Buffer, Buffer]>;
}

function protocolError(what: string): TransportError {
  return new TransportError(`redis: unexpected reply to ${what}`, false);
}

function text(v: unknown): string | undefined {
  if (Buffer.isBuffer(v)) return v.toString();
  if (typeof v === "number") return String(v);
  return undefined;
}

function num(v: unknown): number | undefined {
  const t = text(v);
  if (t === undefined || t.trim() === "") return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : undefined;
}

function parseDeliveries(v: unknown, what: string): Claimed[] {
  if (!Array.isArray(v)) throw protocolError(what);
  return v.map((d: unknown) => {
    if (!Array.isArray(d) || d.length < 4 || !Array.isArray(d[3])) throw protocolError(what);
    const entry = text(d[0]);
    if (entry === undefined) throw protocolError(what);
    const raw = d[3] as unknown[];
    const fields: Array<[Buffer, Buffer]> = [];
    for (let i = 0; i < raw.length; i += 2) {
      const k = raw[i];
      const value = raw[i + 1];
      if (!Buffer.isBuffer(k)) throw protocolError("a stream entry");
      fields.push([k, Buffer.isBuffer(value) ? value : Buffer.alloc(0)]);
    }
    return { entry, epoch: text(d[1]) ?? "0", attempt: num(d[2]) ?? 1, fields };
  });
}

/** Resolves the next `wait` early when `notify` is called (a permit is kept if nobody waits). */
class Notifier {
  #permit = false;
  #wake: (() => void) | undefined;

  notify(): void {
    this.#permit = true;
    this.#wake?.();
  }

  async wait(ms: number): Promise<void> {
    if (this.#permit) {
      this.#permit = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(done, Math.max(0, ms)) : undefined;
      const self = this;
      function done() {
        if (timer !== undefined) clearTimeout(timer);
        self.#wake = undefined;
        resolve();
      }
      this.#wake = done;
    });
    this.#permit = false;
  }
}

let consumers = 0;

function consumerName(): string {
  consumers += 1;
  return `c-${process.pid}-${consumers}-${Math.floor(Math.random() * 1e9)}`;
}

/** The consume loop of one stream of a subscription. */
class StreamLoop<Desc extends DescMessage> {
  readonly #keys: GroupKeys;
  readonly #consumer = consumerName();
  readonly #scripts = scripts();
  readonly #inFlight = new Map<string, string>();
  readonly #events = new Notifier();
  #stopping = false;
  #newEntries = false;
  #listening = false;
  #reconnected = false;
  #finishedDue: number | undefined;
  #listener: RedisConnection | undefined;
  #fatal: ProtocolVersionError | undefined;

  constructor(
    readonly client: Keyway,
    readonly sub: Subscription,
    readonly stream: string,
    readonly schema: Desc,
    readonly handler: Handler<Desc>,
  ) {
    this.#keys = groupKeys(client.keyPrefix, stream, sub.group);
  }

  get #redis(): RedisConnection {
    return this.client.redis;
  }

  stop(): void {
    this.#stopping = true;
    this.#events.notify();
  }

  #headArgs(): Array<string | number> {
    const s = this.sub;
    return [s.group, this.#consumer, s.topic, s.deadLetter ? "1" : "0", s.maxAttempts];
  }

  async #script(script: Script, keys: readonly string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await script.run(this.#redis, keys, args);
    } catch (e) {
      throw transportError(`the ${script.name} script`, e);
    }
  }

  async #ensureGroup(): Promise<void> {
    try {
      await this.#redis.call("XGROUP", "CREATE", this.#keys.stream, this.sub.group, "0", "MKSTREAM");
    } catch (e) {
      if (!(e instanceof Error && e.message.startsWith("BUSYGROUP"))) {
        throw transportError(`creating group ${JSON.stringify(this.sub.group)}`, e);
      }
    }
  }

  async run(): Promise<void> {
    await this.client.ensureCompatible(this.#keys.stream);
    await this.#ensureGroup();
    const onReady = () => {
      this.#reconnected = true;
      this.#events.notify();
    };
    this.#redis.on("ready", onReady);
    const listening = this.#listen();
    const sub = this.sub;
    const quarter = Math.ceil(sub.batchSize / 4);
    const idlePoll = Math.min(IDLE_POLL_MS, Math.max(sub.visibilityTimeoutMs, POLL_MS));
    const recoverEvery = Math.max(sub.visibilityTimeoutMs / 2, 200);
    let recoverDue = Date.now();
    let trimDue = Date.now() + this.client.trimIntervalMs;
    let claimAt = Date.now();
    // When a claim next scans for entries past the visibility timeout: the last scan said when
    // the first pending entry may expire, and an expiry only moves later.
    let scanAt = Date.now();
    let errorBackoff = 50;
    try {
      while (!this.#stopping) {
        let failed: unknown;
        if (this.#reconnected) {
          this.#reconnected = false;
          recoverDue = claimAt = scanAt = Date.now();
        }
        if (Date.now() >= recoverDue && this.#inFlight.size < sub.batchSize) {
          recoverDue = Date.now() + recoverEvery;
          try {
            const busy = [...this.#inFlight.keys()];
            const reply = await this.#script(this.#scripts.recover, this.#keys.keys, [
              ...this.#headArgs(),
              sub.batchSize - this.#inFlight.size,
              ...busy,
            ]);
            for (const d of parseDeliveries(reply, "the recover script")) this.#spawn(d);
          } catch (e) {
            failed = e;
          }
        }
        const free = sub.batchSize - this.#inFlight.size;
        const refill = free >= quarter || this.#inFlight.size === 0;
        if (refill && failed === undefined && Date.now() >= claimAt) {
          try {
            const scan = Date.now() >= scanAt;
            const claim = await this.#claim(free, scan);
            if (claim.scanAgainMs !== undefined) scanAt = Date.now() + claim.scanAgainMs;
            const most = this.#listening ? idlePoll : POLL_MS;
            const untilScan = Math.max(scanAt - Date.now(), 0);
            claimAt = Date.now() + (claim.waitMs === undefined ? 0 : Math.min(claim.waitMs, untilScan, most));
            for (const d of claim.deliveries) this.#spawn(d);
          } catch (e) {
            failed = e;
          }
        }
        if (failed !== undefined) {
          sub.logger.warn(`keyway: reading deliveries of ${sub.topic} as ${sub.group} failed: ${String(failed)}`);
          recoverDue = claimAt = scanAt = Date.now() + errorBackoff;
          errorBackoff = Math.min(errorBackoff * 2, 2000);
        } else {
          errorBackoff = 50;
        }
        if (Date.now() >= trimDue) {
          trimDue = Date.now() + this.client.trimIntervalMs;
          await this.#trim().catch((e) => sub.logger.warn(`keyway: trimming ${this.stream} failed: ${String(e)}`));
          await this.#tend().catch((e) =>
            sub.logger.warn(`keyway: looking after group ${sub.group} of ${sub.topic} failed: ${String(e)}`),
          );
        }
        const canRefill = this.#inFlight.size + quarter <= sub.batchSize || this.#inFlight.size === 0;
        if (canRefill && this.#newEntries) {
          this.#newEntries = false;
          claimAt = Date.now();
        }
        if (this.#finishedDue !== undefined) {
          claimAt = Math.min(claimAt, Date.now() + this.#finishedDue);
          this.#finishedDue = undefined;
        }
        if (canRefill && Date.now() >= claimAt) continue;
        const wakeAt = Math.min(claimAt, recoverDue, trimDue);
        await this.#events.wait(canRefill ? wakeAt - Date.now() : Infinity);
        if (this.#finishedDue !== undefined) {
          claimAt = Math.min(claimAt, Date.now() + this.#finishedDue);
          this.#finishedDue = undefined;
        }
      }
      await this.#drain();
      if (this.#fatal) throw this.#fatal;
    } finally {
      this.#redis.off("ready", onReady);
      this.#listener?.disconnect();
      await listening;
    }
  }

  /** Stop reading; let deliveries in flight finish until the deadline, release the rest, wake the group. */
  async #drain(): Promise<void> {
    const deadline = Date.now() + this.client.shutdownDeadlineMs;
    while (this.#inFlight.size > 0 && Date.now() < deadline) {
      await this.#events.wait(deadline - Date.now());
    }
    for (const [entry, epoch] of this.#inFlight) {
      await this.#settle(entry, epoch, "release", 0, "", {}).catch(() => undefined);
    }
    this.#inFlight.clear();
    await this.#redis
      .call("XADD", this.#keys.wake, "MAXLEN", "1", "*", "by", this.#consumer)
      .catch((e) => this.sub.logger.warn(`keyway: waking the group's other consumers failed: ${String(e)}`));
  }

  /**
   * Claim up to `count` deliveries, scanning for expired entries when `scan`. `waitMs` is how
   * long the claim says the loop may wait (undefined: claim again at once), not counting the
   * next scan; `scanAgainMs`, after a scan, when a claim must scan again.
   */
  async #claim(
    count: number,
    scan: boolean,
  ): Promise<{ deliveries: Claimed[]; waitMs: number | undefined; scanAgainMs: number | undefined }> {
    const reply = await this.#script(this.#scripts.claim, this.#keys.keys, [
      ...this.#headArgs(),
      count,
      delayArg(this.sub.visibilityTimeoutMs),
      ...(scan ? [] : ["0"]),
    ]);
    if (!Array.isArray(reply) || reply.length < 5) throw protocolError("the claim script");
    const deliveries = parseDeliveries(reply[0], "the claim script");
    const [nextDue, now, more, expires] = [num(reply[1]), num(reply[2]), num(reply[3]), num(reply[4])];
    if (nextDue === undefined || now === undefined || more === undefined || expires === undefined) {
      throw protocolError("the claim script");
    }
    let scanAgainMs: number | undefined;
    if (scan) {
      scanAgainMs =
        expires === -1 ? this.sub.visibilityTimeoutMs : expires >= 0 ? expires : more === 1 ? 0 : POLL_MS;
    }
    if (more === 1) return { deliveries, waitMs: undefined, scanAgainMs };
    const wait = nextDue >= 0 ? Math.max(nextDue - now, 0) : Infinity;
    return { deliveries, waitMs: wait, scanAgainMs };
  }

  async #trim(): Promise<void> {
    let groups: unknown;
    try {
      groups = await this.#redis.call("XINFO", "GROUPS", this.#keys.stream);
    } catch (e) {
      if (e instanceof Error && e.message.includes("no such key")) return;
      throw e;
    }
    const names: string[] = [];
    for (const g of Array.isArray(groups) ? groups : []) {
      if (!Array.isArray(g)) continue;
      for (let i = 0; i + 1 < g.length; i += 2) {
        if (g[i] === "name" && typeof g[i + 1] === "string") names.push(g[i + 1] as string);
      }
    }
    const prefix = this.client.keyPrefix;
    const keys = [this.#keys.stream, ...names.map((n) => groupKeys(prefix, this.stream, n).held)];
    await this.#script(this.#scripts.trim, keys, names);
  }

  async #tend(): Promise<void> {
    await this.#script(
      this.#scripts.tend,
      [this.#keys.stream, this.#keys.held],
      [this.sub.group, this.#consumer, this.client.consumerIdleRemovalMs],
    );
  }

  /** Block on `XREAD` for entries newer than the newest seen on the stream and the wake-up stream. */
  async #listen(): Promise<void> {
    const conn = this.#redis.duplicate();
    this.#listener = conn;
    conn.on("error", () => undefined);
    const streams = [this.#keys.stream, this.#keys.wake];
    try {
      const last: string[] = [];
      for (const key of streams) {
        const newest = (await conn.call("XREVRANGE", key, "+", "-", "COUNT", "1")) as unknown[];
        const first = Array.isArray(newest) && Array.isArray(newest[0]) ? newest[0][0] : undefined;
        last.push(typeof first === "string" ? first : "0-0");
      }
      // An entry published between the first claim and reading the newest ids: claim once more.
      this.#listening = true;
      this.#newEntries = true;
      this.#events.notify();
      while (!this.#stopping) {
        let reply: unknown;
        try {
          reply = await conn.call("XREAD", "BLOCK", "1000", "COUNT", "100", "STREAMS", ...streams, ...last);
        } catch {
          if (this.#stopping) return;
          if (this.#listening) {
            this.#listening = false;
            this.#events.notify();
          }
          await new Promise((r) => setTimeout(r, 200));
          continue;
        }
        this.#listening = true;
        if (!Array.isArray(reply)) continue;
        for (const s of reply) {
          if (!Array.isArray(s) || !Array.isArray(s[1])) continue;
          const entries = s[1] as unknown[];
          const newest = entries[entries.length - 1];
          const i = streams.indexOf(s[0] as string);
          if (i >= 0 && Array.isArray(newest) && typeof newest[0] === "string") last[i] = newest[0];
        }
        this.#newEntries = true;
        this.#events.notify();
      }
    } catch {
      // The connection is gone: the loop polls.
    } finally {
      this.#listening = false;
      conn.disconnect();
    }
  }

  #spawn(claimed: Claimed): void {
    this.#inFlight.set(claimed.entry, claimed.epoch);
    void this.#process(claimed).then(
      (dueIn) => this.#finished(claimed.entry, dueIn),
      () => this.#finished(claimed.entry, undefined),
    );
  }

  #finished(entry: string, dueIn: number | undefined): void {
    this.#inFlight.delete(entry);
    if (dueIn !== undefined) {
      this.#finishedDue = this.#finishedDue === undefined ? dueIn : Math.min(this.#finishedDue, dueIn);
    }
    this.#events.notify();
  }

  async #settle(
    entry: string,
    epoch: string,
    action: string,
    delayMs: number,
    reason: string,
    detail: Detail,
    withAck: readonly Staged[] = [],
  ): Promise<{ status: string; dueIn: number | undefined }> {
    const keys = [...this.#keys.keys];
    const args: Array<string | number | Uint8Array> = [...this.#headArgs(), entry, epoch, action, delayArg(delayMs), reason];
    for (const k of byteOrder(Object.keys(detail))) args.push(k, String(detail[k]));
    if (action === "ack" && withAck.length > 0) {
      args.push(this.client.dedupTtlMs);
      for (const m of withAck) {
        keys.push(m.streamKey, m.dedupKey);
        args.push(m.id, m.partitionKey, m.payload, m.metadata.length / 2, ...m.metadata);
      }
    }
    let wait = 50;
    for (let tries = 1; ; tries++) {
      try {
        const reply = await this.#scripts.settle.run(this.#redis, keys, args);
        const status = Array.isArray(reply) ? text(reply[0]) : undefined;
        const dueIn = Array.isArray(reply) ? num(reply[1]) : undefined;
        if (status === undefined || dueIn === undefined) throw protocolError("the settle script");
        return { status, dueIn: dueIn >= 0 ? dueIn : undefined };
      } catch (e) {
        const t = transportError("the settle script", e);
        if (!t.retryable || tries >= 4) throw t;
        await new Promise((r) => setTimeout(r, wait));
        wait *= 2;
      }
    }
  }

  /** Run the handler on one delivery and settle it; returns when the settle made an entry claimable. */
  async #process(claimed: Claimed): Promise<number | undefined> {
    const sub = this.sub;
    // An entry of an incompatible protocol version is neither handled nor settled: it stays
    // pending for a compatible consumer, and this loop stops with the error.
    const incompatible = checkVersion(this.#keys.stream, claimed.entry, claimed.fields);
    if (incompatible) {
      this.#fatal ??= incompatible;
      this.stop();
      return undefined;
    }
    const read = readEnvelope(claimed.fields);
    if (!read.ok) {
      const reason = `malformed stream entry: ${read.problems.join("; ")}`;
      sub.logger.warn(`keyway: ${sub.topic} entry ${claimed.entry}: ${reason}`);
      return this.#settled(
        await this.#settle(claimed.entry, claimed.epoch, "malformed", 0, reason, { kind: "malformed" }).catch(
          (e: unknown) => e,
        ),
      );
    }
    const env = read.envelope;
    const delivery: Delivery = Object.freeze({
      topic: sub.topic,
      id: env.id,
      partitionKey: env.partitionKey,
      metadata: Object.freeze(env.metadata),
      publishedAtMs: env.publishedAtMs,
      attempt: claimed.attempt,
      entry: claimed.entry,
      payload: env.payload,
      extendVisibility: async () => {
        const { status } = await this.#settle(claimed.entry, claimed.epoch, "extend", 0, "", {});
        if (status !== "ok") throw new TransportError("the delivery was already reclaimed by another consumer", false);
      },
    });
    openOutbox(delivery);
    let outcome = await this.#outcome(delivery);
    let withAck = takeOutbox(delivery);
    // A script's keys must share one slot: on a cluster the messages go out before the ack.
    if (outcome.kind === "ack" && withAck.length > 0 && this.#redis.isCluster) {
      outcome = await this.#publishBeforeAck(withAck);
      withAck = [];
    }
    let action: string;
    let delay = 0;
    let reason = "";
    let detail: Detail = {};
    switch (outcome.kind) {
      case "ack":
        action = "ack";
        break;
      case "postpone":
        action = "postpone";
        delay = outcome.delayMs;
        break;
      case "retry":
      case "reject":
        ({ reason, detail } = outcome);
        if (outcome.kind === "retry" || sub.retryEveryError) {
          action = "nack";
          delay = backoffDelay(sub.backoff, delivery.attempt);
        } else {
          action = "reject";
        }
        break;
    }
    return this.#settled(
      await this.#settle(claimed.entry, claimed.epoch, action, delay, reason, detail, withAck).catch(
        (e: unknown) => e,
      ),
    );
  }

  /** Publish messages staged with an ack one by one, in order; a failure makes the ack a retry or a reject. */
  async #publishBeforeAck(staged: readonly Staged[]): Promise<Outcome> {
    for (const m of staged) {
      try {
        await this.client.publishAddressed(m);
      } catch (e) {
        const why = `publishing on ${JSON.stringify(m.topic)} with the ack failed: ${e instanceof Error ? e.message : String(e)}`;
        return causedByRetryableTransport(e) ? retry(why, { kind: "publish" }) : reject(why, { kind: "publish" });
      }
    }
    return ack();
  }

  /** Decode and hand to the handler; what it returns or throws, as an outcome. */
  async #outcome(delivery: Delivery): Promise<Outcome> {
    const name = this.schema.typeName;
    let message: MessageShape<Desc>;
    try {
      const json: unknown = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(delivery.payload));
      message = fromJson(this.schema, json as never, { ignoreUnknownFields: true });
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      return reject(`payload does not decode as ${name}: ${why}`, { kind: "decode", message: name });
    }
    try {
      const outcome = await this.handler(message, delivery);
      return outcome ?? ack();
    } catch (e) {
      if (e instanceof RetryableError) return retry(e.message, e.detail);
      if (e instanceof PermanentError) return reject(e.message, e.detail);
      const why = e instanceof Error ? e.message : String(e);
      return causedByRetryableTransport(e) ? retry(why) : reject(why);
    }
  }

  #settled(result: { status: string; dueIn: number | undefined } | unknown): number | undefined {
    const sub = this.sub;
    if (result instanceof Error || typeof result !== "object" || result === null || !("status" in result)) {
      sub.logger.warn(
        `keyway: settling failed, the delivery will be redelivered after the visibility timeout: ${String(result)}`,
      );
      return undefined;
    }
    const settled = result as { status: string; dueIn: number | undefined };
    if (settled.status === "dropped") {
      sub.logger.warn("keyway: delivery failed and the subscription has no dead-letter stream: dropped");
    } else if (settled.status === "stale") {
      sub.logger.warn("keyway: settling refused: the delivery was reclaimed by another consumer (visibility timeout)");
    }
    return settled.dueIn;
  }
}

/** Decodes the deliveries of `topic` and hands them to a handler, in a consumer group. */
export class Consumer<Desc extends DescMessage> {
  readonly #sub: Subscription;
  #loops: Array<StreamLoop<Desc>> = [];
  #running: Promise<void> | undefined;

  constructor(
    readonly client: Keyway,
    readonly topic: Topic<Desc>,
    options: SubscriptionOptions,
    readonly handler: Handler<Desc>,
  ) {
    if (typeof handler !== "function") throw new ConfigError("handler", "must be a function");
    this.#sub = subscription(topic.key, options);
    client.streams(topic.key);
  }

  /** Consume until [`stop`](Consumer.stop); resolves once stopped, rejects when the group cannot be set up. */
  run(): Promise<void> {
    if (this.#running) return this.#running;
    const streams = this.client.streams(this.topic.key);
    const sub = { ...this.#sub, batchSize: Math.max(1, Math.ceil(this.#sub.batchSize / streams.length)) };
    this.#loops = streams.map((s) => new StreamLoop(this.client, sub, s, this.topic.schema, this.handler));
    const loops = this.#loops.map((l) => l.run());
    this.#running = Promise.all(loops).then(
      () => undefined,
      async (e: unknown) => {
        for (const l of this.#loops) l.stop();
        await Promise.allSettled(loops);
        throw e;
      },
    );
    return this.#running;
  }

  /** Stop reading; finish (or, past the shutdown deadline, release) what is in flight. */
  async stop(): Promise<void> {
    for (const l of this.#loops) l.stop();
    await this.#running;
  }
}
