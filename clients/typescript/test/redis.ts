// Each test file's own redis-server, on a free loopback port (never 6379).

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) ? low : 32768;
  } catch {
    return 32768;
  }
}

function bindable(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : undefined));
    });
  });
}

/**
 * A loopback port free now, picked below the kernel's ephemeral range: outgoing connections
 * take their local ports from that range, so none can take this one before the server binds it.
 */
async function freePort(): Promise<number> {
  const low = ephemeralLow();
  for (let i = 0; i < 100; i++) {
    const port = await bindable(low > 10100 ? 10000 + Math.floor(Math.random() * (low - 10000)) : 0);
    if (port !== undefined && port !== 6379) return port;
  }
  throw new Error("no free loopback port below the ephemeral range");
}

function readLog(path: string): string {
  return existsSync(path) ? readFileSync(path, "utf8") : "";
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
  // Ready means this server's own log says so (a PONG on the port could come from another
  // test's server that holds it); a start that lost the port to someone else is retried.
  for (let tries = 0; tries < 10; tries++) {
    const port = await freePort();
    const log = join(dir, `redis-${tries}.log`);
    const child: ChildProcess = spawn(
      process.env.KEYWAY_REDIS_SERVER ?? "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", log],
      { stdio: ["ignore", "ignore", "ignore"] },
    );
    let exited = false;
    const failed = new Promise<Error>((resolve) => {
      child.once("error", (e) => {
        exited = true;
        resolve(new Error(`cannot start redis-server (install it: apt-get install redis-server): ${e.message}`));
      });
      child.once("exit", (code) => {
        exited = true;
        resolve(new Error(`redis-server exited with ${code}`));
      });
    });
    const up = (async () => {
      const until = Date.now() + 10000;
      while (Date.now() < until && !exited) {
        if (readLog(log).includes("Ready to accept connections")) return true;
        await new Promise((r) => setTimeout(r, 20));
      }
      return false;
    })();
    const result = await Promise.race([up, failed]);
    if (result === true) {
      const clients: Redis[] = [];
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
          const gone = new Promise((r) => child.once("exit", r));
          child.kill("SIGTERM");
          await gone;
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    if (!exited) {
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await gone;
    }
    const said = readLog(log);
    if (!said.includes("Address already in use")) {
      const tail = said.trim().split("\n").slice(-3).join(" | ");
      throw result instanceof Error
        ? new Error(`${result.message}: ${tail || "no log"}`)
        : new Error(`redis-server on port ${port} did not say it was ready within 10 s: ${tail || "no log"}`);
    }
  }
  throw new Error("redis-server found every free port taken by the time it bound it");
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
