// What a handler publishes with its delivery's ack (a transactional outbox), kept per delivery
// until the consume loop settles it.

import { ConfigError } from "./errors.js";

/** A message addressed to its stream, to publish now or with an ack. */
export interface Staged {
  readonly topic: string;
  readonly streamKey: string;
  readonly dedupKey: string;
  readonly id: string;
  readonly partitionKey: string;
  readonly payload: Uint8Array;
  /** Metadata names and values, flat, in byte order of the names. */
  readonly metadata: readonly string[];
}

const outboxes = new WeakMap<object, Staged[]>();

/** Start keeping what is published with `delivery`'s ack. */
export function openOutbox(delivery: object): void {
  outboxes.set(delivery, []);
}

/** Add `message` to `delivery`'s outbox. */
export function stage(delivery: object, message: Staged): void {
  const outbox = outboxes.get(delivery);
  if (outbox === undefined) {
    throw new ConfigError("delivery", "is not a delivery being handled by a consumer (it was settled, or never handed out)");
  }
  outbox.push(message);
}

/** What was published with `delivery`'s ack, in order; the outbox is closed. */
export function takeOutbox(delivery: object): Staged[] {
  const outbox = outboxes.get(delivery) ?? [];
  outboxes.delete(delivery);
  return outbox;
}
