// The queue's layout on Redis: key names, bucket choice, and reading a stream entry's
// envelope. Everything here is pure, so it is what the unit tests pin against the Rust
// runtime's own vectors.

/** The suffix of a dead-letter topic key and of its stream. */
export const DEAD_LETTER_SUFFIX = "_dlq";

/** The most buckets a topic may be spread over. */
export const BUCKETS_MAX = 1024;

const encoder = new TextEncoder();

/** Whether `name` is a valid topic key, stream or group name: 1 to 255 of `[a-z0-9_-]`. */
export function isValidTopicName(name: string): boolean {
  return /^[a-z0-9_-]{1,255}$/.test(name);
}

/** FNV-1a (64-bit) of the UTF-8 bytes of `text`. */
export function fnv1a64(text: string): bigint {
  let hash = 0xcbf29ce484222325n;
  for (const byte of encoder.encode(text)) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash;
}

/**
 * The bucket of `partitionKey` in a topic spread over `buckets` streams: FNV-1a (64-bit) of
 * the key's UTF-8 bytes, modulo the count. Every client computes the same, so all messages of
 * a key go to one stream whoever publishes them.
 */
export function bucketOf(partitionKey: string, buckets: number): number {
  const n = BigInt(Math.max(1, Math.trunc(buckets)));
  return Number(fnv1a64(partitionKey) % n);
}

/** The stream of bucket `bucket`: `stream` itself for one bucket, else `<stream>#<bucket>`. */
export function bucketStream(stream: string, buckets: number, bucket: number): string {
  return buckets <= 1 ? stream : `${stream}#${bucket}`;
}

/** The hash tag of a stream: its name without `_dlq` suffixes. */
export function hashTag(stream: string): string {
  let tag = stream;
  while (tag.endsWith(DEAD_LETTER_SUFFIX) && tag.length > DEAD_LETTER_SUFFIX.length) {
    tag = tag.slice(0, -DEAD_LETTER_SUFFIX.length);
  }
  return tag;
}

/** `<prefix>:{<tag>}:s:<stream>`: the stream's key. */
export function streamKey(prefix: string, stream: string): string {
  return `${prefix}:{${hashTag(stream)}}:s:${stream}`;
}

/** `<prefix>:{<tag>}:d:<stream>:<byte length of pk>:<pk>:<id>`: the publish dedup key. */
export function dedupKey(prefix: string, stream: string, partitionKey: string, id: string): string {
  const len = encoder.encode(partitionKey).length;
  return `${prefix}:{${hashTag(stream)}}:d:${stream}:${len}:${partitionKey}:${id}`;
}

/** The nine keys of a group script, in the scripts' order, and the group's wake-up stream. */
export interface GroupKeys {
  readonly keys: readonly string[];
  readonly stream: string;
  readonly held: string;
  readonly wake: string;
}

/** The keys of group `group` on `stream`. */
export function groupKeys(prefix: string, stream: string, group: string): GroupKeys {
  const tag = hashTag(stream);
  const g = (part: string) => `${prefix}:{${tag}}:g:${stream}:${group}:${part}`;
  const keys = [
    streamKey(prefix, stream),
    g("heads"),
    g("waiting"),
    g("due"),
    g("held"),
    g("attempts"),
    g("errors"),
    g("pks"),
    streamKey(prefix, stream + DEAD_LETTER_SUFFIX),
  ];
  return { keys, stream: keys[0]!, held: keys[4]!, wake: g("wake") };
}

/** The fields of a stream entry that make a delivery. */
export interface Envelope {
  id: string;
  partitionKey: string;
  publishedAtMs: number;
  payload: Uint8Array;
  metadata: Record<string, string>;
}

const ENVELOPE_FIELDS = ["id", "pk", "at", "payload"] as const;
const strict = new TextDecoder("utf-8", { fatal: true });

function utf8(bytes: Uint8Array): string | undefined {
  try {
    return strict.decode(bytes);
  } catch {
    return undefined;
  }
}

function startsWith(bytes: Uint8Array, prefix: string): boolean {
  const p = encoder.encode(prefix);
  if (bytes.length < p.length) return false;
  return p.every((b, i) => bytes[i] === b);
}

/**
 * Read the envelope of a stream entry as the publish script writes it: `id` (not empty),
 * `pk`, `at` (ms since the epoch) and `payload`, each exactly once, and `m:<key>` metadata at
 * most once per key; text in UTF-8, the payload any bytes; other fields are ignored. An entry
 * that breaks a rule was not written by a Keyway publisher: every problem is listed, in the
 * same words as the Rust runtime, so it can be dead-lettered as malformed.
 */
export function readEnvelope(
  fields: ReadonlyArray<readonly [Uint8Array, Uint8Array]>,
): { ok: true; envelope: Envelope } | { ok: false; problems: string[] } {
  const found = ENVELOPE_FIELDS.map(() => ({ count: 0, first: undefined as Uint8Array | undefined }));
  const metadata: Array<[Uint8Array, Uint8Array]> = [];
  for (const [name, value] of fields) {
    const text = utf8(name);
    const slot = text === undefined ? -1 : ENVELOPE_FIELDS.indexOf(text as (typeof ENVELOPE_FIELDS)[number]);
    if (slot >= 0) {
      const f = found[slot]!;
      f.count += 1;
      f.first ??= value;
    } else if (startsWith(name, "m:")) {
      metadata.push([name.subarray(2), value]);
    }
  }
  const problems: string[] = [];
  const envelope: Envelope = {
    id: "",
    partitionKey: "",
    publishedAtMs: 0,
    payload: new Uint8Array(),
    metadata: Object.create(null) as Record<string, string>,
  };
  ENVELOPE_FIELDS.forEach((name, i) => {
    const { count, first } = found[i]!;
    if (count === 0) {
      problems.push(`no \`${name}\` field`);
      return;
    }
    if (count > 1) problems.push(`\`${name}\` appears ${count} times`);
    const value = first ?? new Uint8Array();
    if (name === "payload") {
      envelope.payload = value;
      return;
    }
    const text = utf8(value);
    if (name === "at") {
      if (text !== undefined && /^\+?[0-9]+$/.test(text) && BigInt(text) <= 0xffffffffffffffffn) {
        envelope.publishedAtMs = Number(text);
      } else {
        problems.push("`at` is not a number of milliseconds");
      }
      return;
    }
    if (text === undefined) {
      problems.push(`\`${name}\` is not UTF-8`);
    } else if (name === "id") {
      if (text === "") problems.push("`id` is empty");
      else envelope.id = text;
    } else {
      envelope.partitionKey = text;
    }
  });
  const repeated = new Set<string>();
  for (const [rawKey, rawValue] of metadata) {
    const key = utf8(rawKey);
    if (key === undefined) {
      problems.push("a metadata field name (`m:...`) is not UTF-8");
      continue;
    }
    const value = utf8(rawValue);
    if (value === undefined) {
      problems.push(`metadata \`m:${key}\` is not UTF-8`);
      continue;
    }
    if (Object.hasOwn(envelope.metadata, key)) {
      if (!repeated.has(key)) {
        problems.push(`metadata \`m:${key}\` appears more than once`);
        repeated.add(key);
      }
      continue;
    }
    envelope.metadata[key] = value;
  }
  return problems.length === 0 ? { ok: true, envelope } : { ok: false, problems };
}

/** Keys of `record` in the order of their UTF-8 bytes, as the Rust runtime orders metadata. */
export function byteOrder(keys: Iterable<string>): string[] {
  return [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** The version of the wire protocol this client speaks (`docs/wire-protocol.md`). */
export const PROTOCOL_VERSION = "1";

/** The protocol versions this client reads: an entry without `v` is version 1. */
export const SUPPORTED_VERSIONS: readonly string[] = [PROTOCOL_VERSION];

/** A stream holds an entry written by a protocol version this client does not speak. */
export class ProtocolVersionError extends Error {
  override name = "ProtocolVersionError";
  constructor(
    readonly stream: string,
    readonly entry: string,
    readonly version: string,
  ) {
    super(
      `stream ${stream}: entry ${entry} was written by protocol version ${version}; ` +
        `this client speaks version ${SUPPORTED_VERSIONS.join(", ")}`,
    );
  }
}

/** The `v` field of an entry (its first occurrence), as text; undefined when absent. */
export function entryVersion(fields: ReadonlyArray<readonly [Uint8Array, Uint8Array]>): string | undefined {
  for (const [name, value] of fields) {
    if (name.length === 1 && name[0] === 0x76) return Buffer.from(value).toString("utf8");
  }
  return undefined;
}

/** The problem with an entry's version, if it is not one this client reads. */
export function checkVersion(
  stream: string,
  entry: string,
  fields: ReadonlyArray<readonly [Uint8Array, Uint8Array]>,
): ProtocolVersionError | undefined {
  const v = entryVersion(fields);
  if (v === undefined || SUPPORTED_VERSIONS.includes(v)) return undefined;
  return new ProtocolVersionError(stream, entry, v);
}
