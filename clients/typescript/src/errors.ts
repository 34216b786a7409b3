// Errors of the client, and how a handler's errors are classified.

/** A Redis operation failed. `retryable` when trying again later may succeed. */
export class TransportError extends Error {
  override name = "TransportError";
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An option or argument is wrong; the message names it. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`${key}: ${message}`);
  }
}

/** Structured detail that travels with a failure into a dead letter (`dlq.detail.<key>`). */
export type Detail = Record<string, string>;

/** Thrown by a handler: a failure worth retrying (a conflict, a dependency that is down). */
export class RetryableError extends Error {
  override name = "RetryableError";
  constructor(
    reason: string,
    readonly detail: Detail = {},
  ) {
    super(reason);
  }
}

/** Thrown by a handler: a failure no retry can fix; the message is dead-lettered at once. */
export class PermanentError extends Error {
  override name = "PermanentError";
  constructor(
    reason: string,
    readonly detail: Detail = {},
  ) {
    super(reason);
  }
}

const BUSY = ["LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY"];
const NETWORK = ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTCONN", "EHOSTUNREACH"];

/** Whether an error from ioredis is one that trying again later may cure. */
export function isRetryableRedisError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e instanceof TransportError) return e.retryable;
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string" && NETWORK.includes(code)) return true;
  if (BUSY.some((p) => e.message.startsWith(p))) return true;
  return /Connection is closed|Stream isn't writeable|max retries per request/i.test(e.message);
}

/** An ioredis error as a [`TransportError`], saying what failed. */
export function transportError(what: string, e: unknown): TransportError {
  if (e instanceof TransportError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new TransportError(`redis: ${what}: ${message}`, isRetryableRedisError(e), { cause: e });
}

/**
 * Whether an unclassified handler error should be retried: only when it is, or was caused by,
 * a retryable transport failure (a lost connection). Anything else is permanent.
 */
export function causedByRetryableTransport(e: unknown): boolean {
  const seen = new Set<unknown>();
  let cause: unknown = e;
  while (cause instanceof Error && !seen.has(cause)) {
    seen.add(cause);
    if (cause instanceof TransportError) return cause.retryable;
    if (isRetryableRedisError(cause)) return true;
    cause = cause.cause;
  }
  return false;
}
