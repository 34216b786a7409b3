// A topic key and the one message it carries.

import type { DescMessage } from "@bufbuild/protobuf";

import { ConfigError } from "./errors.js";
import { isValidTopicName } from "./protocol.js";

/** A topic key bound to its message schema. The generated registry defines one per key. */
export interface Topic<Desc extends DescMessage = DescMessage> {
  /** The logical key, such as `merge-signal`. */
  readonly key: string;
  /** The schema of the message it carries (a `*Schema` export of the generated code). */
  readonly schema: Desc;
}

/** Bind `key` to `schema`. */
export function defineTopic<Desc extends DescMessage>(key: string, schema: Desc): Topic<Desc> {
  if (!isValidTopicName(key)) {
    throw new ConfigError("key", `${JSON.stringify(key)} is not a valid topic key ([a-z0-9_-]{1,255})`);
  }
  return Object.freeze({ key, schema });
}

/** The dead-letter topic of `topic` (`<key>_dlq`): the same message, with `dlq.*` metadata. */
export function deadLetters<Desc extends DescMessage>(topic: Topic<Desc>): Topic<Desc> {
  return defineTopic(`${topic.key}_dlq`, topic.schema);
}
