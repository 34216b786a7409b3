// The Lua scripts of the queue: the very files the Rust runtime embeds (`runtime/lua/`),
// shipped in this package's `lua/` directory. A test in the repository fails when a copy
// differs from its original.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { RedisConnection } from "./client.js";

const LUA_DIR = new URL("../../lua/", import.meta.url);

function load(name: string): string {
  return readFileSync(new URL(name, LUA_DIR), "utf8");
}

/** A script run by its SHA-1 (`EVALSHA`), loaded with `EVAL` when the server lacks it. */
export class Script {
  readonly sha: string;
  constructor(
    readonly name: string,
    readonly source: string,
  ) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  /** Run with `keys` and `args`; string replies come back as `Buffer`s. */
  async run(redis: RedisConnection, keys: readonly string[], args: ReadonlyArray<string | number | Uint8Array>): Promise<unknown> {
    const tail = [keys.length, ...keys, ...args.map((a) => (a instanceof Uint8Array ? Buffer.from(a) : a))];
    try {
      return await redis.callBuffer("EVALSHA", this.sha, ...tail);
    } catch (e) {
      if (e instanceof Error && e.message.startsWith("NOSCRIPT")) {
        return await redis.callBuffer("EVAL", this.source, ...tail);
      }
      throw e;
    }
  }
}

/** Every script of the queue. A group script is `helpers.lua` followed by its own file. */
export interface Scripts {
  publish: Script;
  claim: Script;
  recover: Script;
  settle: Script;
  trim: Script;
  tend: Script;
}

let loaded: Scripts | undefined;

/** The scripts, read once from `lua/`. */
export function scripts(): Scripts {
  if (loaded) return loaded;
  const helpers = load("helpers.lua");
  loaded = {
    publish: new Script("publish", load("publish.lua")),
    claim: new Script("claim", helpers + load("claim.lua")),
    recover: new Script("recover", helpers + load("recover.lua")),
    settle: new Script("settle", helpers + load("settle.lua")),
    trim: new Script("trim", load("trim.lua")),
    tend: new Script("tend", load("tend.lua")),
  };
  return loaded;
}
