// Each test file's own redis-server, on a free loopback port (never 6379).

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** A running redis-server; `stop()` ends it and removes its directory. */
export interface TestRedis {
  readonly url: string;
  readonly port: number;
  client(): Redis;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), "keyway-ts-redis-"));
  for (let tries = 0; ; tries++) {
    const port = await freePort();
    const child: ChildProcess = spawn(
      process.env.KEYWAY_REDIS_SERVER ?? "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    const failed = new Promise<Error>((resolve) => {
      child.once("error", (e) => resolve(new Error(`cannot start redis-server (install it: apt-get install redis-server): ${e.message}`)));
      child.once("exit", (code) => resolve(new Error(`redis-server exited with ${code}`)));
    });
    const clients: Redis[] = [];
    const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on("error", () => undefined);
    const up = (async () => {
      const until = Date.now() + 5000;
      while (Date.now() < until) {
        try {
          await probe.connect();
          await probe.ping();
          return true;
        } catch {
          probe.disconnect();
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      return false;
    })();
    const result = await Promise.race([up, failed]);
    probe.disconnect();
    if (result === true) {
      return {
        url: `redis://127.0.0.1:${port}`,
        port,
        client() {
          const c = new Redis({ port, host: "127.0.0.1" });
          clients.push(c);
          return c;
        },
        async stop() {
          for (const c of clients) c.disconnect();
          const exited = new Promise((r) => child.once("exit", r));
          child.kill("SIGTERM");
          await exited;
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    child.kill("SIGKILL");
    if (tries >= 3) throw result instanceof Error ? result : new Error("redis-server did not answer within 5 s");
  }
}

/** Wait until `cond` holds, up to `ms`; fails naming `what`. */
export async function eventually(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A logger that keeps warnings instead of printing them. */
export function quiet(): { warn(message: string): void; lines: string[] } {
  const lines: string[] = [];
  return { lines, warn: (m: string) => void lines.push(m) };
}

/** Fields of a stream entry as [name, value] text pairs. */
export function pairs(flat: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}
