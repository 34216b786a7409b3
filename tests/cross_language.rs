//! Three languages on one queue: a Python producer submits batches, the Rust `keyway run all`
//! process lands them (fake merger), a TypeScript consumer sees every `MergeResult` on
//! `merge-signal` in a group of its own, and a Python consumer sees every `conclude`. Then the
//! same number of batches is submitted from Rust on the same server and processes, and both
//! throughputs are printed side by side.
//!
//! The queue's guarantees hold whichever language is on either end:
//! - one (topic, partition key, message id) is one stream entry, whoever publishes it first, and
//!   every later publisher is told it published a duplicate;
//! - the messages of one partition key, published by Rust, Python and TypeScript in turn, are
//!   handled in publish order by a Rust consumer and by a Python consumer;
//! - a payload that does not decode, published from Python, is dead-lettered by `keyway run`
//!   with the decode problem as its reason, and the messages behind it still flow;
//! - a rejection by a Python handler dead-letters a message exactly as a Rust handler's
//!   rejection of it does (the same fields, reason, detail and failure count).
//!
//! Node.js and the Python client's virtualenv are set up as `tests/clients_typescript.rs` and
//! `tests/clients_python.rs` set them up (the same directories and stamps); a missing
//! interpreter fails `interpreters_are_available` with the command to install it and the other
//! tests say they were skipped.

use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway::orchestrator::{BatchState, LandStrategy};
use keyway::runway::messagequeue::{MergeResult, Outcome as MergeOutcome};
use keyway::stages::submit::{submit, NewRequest};
use keyway::stages::{app, store::Store};
use keyway::topics::MergeSignal;
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend, Shutdown};
use keyway_runtime::stub::{Consumer, Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{
    Backoff, Delivery, MessageId, Metadata, PublishReceipt, SubscriptionConfig,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const BATCHES: usize = 40;
const INSTALL: &str = "Debian/Ubuntu: `apt-get install nodejs npm python3 python3-venv`, \
                       macOS: `brew install node python`";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run ({e}); install it ({INSTALL})"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(format!(
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `node` with `clients/typescript` installed (stamped `npm ci`) and built.
fn node() -> Result<PathBuf, String> {
    let node = PathBuf::from(std::env::var_os("KEYWAY_NODE").unwrap_or_else(|| "node".into()));
    run(Command::new(&node).arg("--version"), "node --version")?;
    let dir = root().join("clients/typescript");
    let lockfile = fs::read_to_string(dir.join("package-lock.json"))
        .map_err(|e| format!("cannot read clients/typescript/package-lock.json: {e}"))?;
    let stamp = dir.join("node_modules/.keyway-lock-stamp");
    if !fs::read_to_string(&stamp).is_ok_and(|s| s == lockfile) {
        run(
            Command::new("npm")
                .arg("ci")
                .arg("--prefix")
                .arg(&dir)
                .args(["--no-audit", "--no-fund"]),
            "npm ci --prefix clients/typescript",
        )?;
        fs::write(&stamp, &lockfile)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    run(
        Command::new(&node)
            .args(["node_modules/typescript/bin/tsc", "-p", "."])
            .current_dir(&dir),
        "tsc -p clients/typescript",
    )?;
    Ok(node)
}

/// The Python client's virtualenv (`target/clients/python`, stamped with its requirements),
/// made if it is missing or stale.
fn python() -> Result<PathBuf, String> {
    const STAMP: &str = ".keyway-requirements-stamp";
    let requirements_path = root().join("clients/python/requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .map_err(|e| format!("cannot read clients/python/requirements.txt: {e}"))?;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    };
    let venv = target.join("clients/python");
    let python = venv.join("bin/python");
    if fs::read_to_string(venv.join(STAMP)).is_ok_and(|s| s == requirements)
        && run(
            Command::new(&python).args(["-c", "import redis, google.protobuf"]),
            "python",
        )
        .is_ok()
    {
        return Ok(python);
    }
    let staging = target.join(format!("clients/python.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(target.join("clients")).map_err(|e| e.to_string())?;
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&staging),
        "python3 -m venv",
    )?;
    run(
        Command::new(staging.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
            ])
            .arg(&requirements_path),
        "pip install -r clients/python/requirements.txt",
    )?;
    fs::write(staging.join(STAMP), &requirements).map_err(|e| e.to_string())?;
    let aside = target.join(format!("clients/python.stale-{}", std::process::id()));
    let _ = fs::rename(&venv, &aside);
    let _ = fs::remove_dir_all(&aside);
    if fs::rename(&staging, &venv).is_err() && !venv.join(STAMP).exists() {
        return Err(format!("cannot move the virtualenv to {}", venv.display()));
    }
    Ok(python)
}

fn interpreters() -> Result<&'static (PathBuf, PathBuf), &'static str> {
    static BOTH: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    BOTH.get_or_init(|| Ok((node()?, python()?)))
        .as_ref()
        .map_err(String::as_str)
}

#[test]
fn interpreters_are_available() {
    if let Err(why) = interpreters() {
        panic!("the cross-language test needs Node.js and Python: {why}");
    }
}

/// Submits `argv[1]` batches to queue `argv[2]` with the Python client, then consumes
/// `conclude` as group `py-watch` until every one of them is concluded; prints what it did.
const PYTHON_SIDE: &str = r#"
import asyncio, os, sys, time
import redis.asyncio as aioredis
from keyway import ACK, Client
from keyway.merge import NewRequest, submit
from keyway.orchestrator import topics as otopics

async def main() -> None:
    n, queue = int(sys.argv[1]), sys.argv[2]
    r = aioredis.from_url(os.environ["REDIS_URL"])
    client = Client(r)
    submitted, concluded = set(), set()
    done = asyncio.Event()

    async def on_conclude(ref, delivery):
        if ref.id in submitted or ref.queue == queue:
            concluded.add(ref.id)
            print(f"conclude {ref.id} {time.time_ns() // 1_000_000}", flush=True)
        if len(concluded) >= n:
            done.set()
        return ACK

    watcher = asyncio.create_task(client.consumer(otopics.CONCLUDE, "py-watch", on_conclude).run(done))
    print(f"start {time.time_ns() // 1_000_000}", flush=True)
    for i in range(n):
        sha = "%040x" % (i + 1)
        batch = await submit(client, queue, [NewRequest(uris=[f"file:///srv/{queue}/refs%2Fheads%2Fc{i}/{sha}"])])
        submitted.add(batch.id)
        print(f"submitted {batch.id}", flush=True)
    await asyncio.wait_for(done.wait(), 60)
    await watcher
    await r.aclose()

asyncio.run(main())
"#;

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines a finished child printed, starting with `tag`: the rest of each line.
fn tagged(out: &str, tag: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(tag).map(|r| r.trim().to_owned()))
        .collect()
}

fn wait_output(mut child: Child, what: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {limit:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_submits_rust_lands_typescript_and_python_watch() {
    let (node, python) = match interpreters() {
        Ok(both) => both,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .unwrap();
    let url = server.url();
    let config = std::env::temp_dir().join(format!("keyway-cross-{}.toml", std::process::id()));
    let mut text = String::from("[runway]\nmerger = \"fake\"\n\n[topics]\n");
    for (key, stream) in app::registry().iter() {
        text.push_str(&format!("{key} = \"{stream}\"\n"));
    }
    fs::write(&config, text).unwrap();

    let rust = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["run", "all"])
        .env("REDIS_URL", &url)
        .env("KEYWAY_CONFIG", &config)
        .env_remove("KEYWAY_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyway run all starts");
    let mut workers = Killed(vec![rust]);

    // Both watchers count every batch of the run: the Python one and the Rust one after it.
    let ts = Command::new(node)
        .arg("dist/test/cross/watch-merge-signal.js")
        .arg((2 * BATCHES).to_string())
        .current_dir(root().join("clients/typescript"))
        .env("REDIS_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the TypeScript watcher starts");

    let py = Command::new(python)
        .arg("-c")
        .arg(PYTHON_SIDE)
        .arg(BATCHES.to_string())
        .arg("payments")
        .env("REDIS_URL", &url)
        .env("PYTHONPATH", root().join("clients/python/src"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Python side starts");
    let py_out = wait_output(
        py,
        "the Python producer and conclude watcher",
        Duration::from_secs(60),
    );
    let submitted: BTreeSet<String> = tagged(&py_out, "submitted ").into_iter().collect();
    let concluded: Vec<(String, u64)> = tagged(&py_out, "conclude ")
        .iter()
        .filter_map(|l| {
            let (id, at) = l.split_once(' ')?;
            Some((id.to_owned(), at.parse().ok()?))
        })
        .collect();
    let start: u64 = tagged(&py_out, "start ")[0].parse().unwrap();
    assert_eq!(submitted.len(), BATCHES, "{py_out}");
    let concluded_ids: BTreeSet<String> = concluded.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        concluded_ids, submitted,
        "Python saw every conclude of its batches"
    );
    let cross_ms = concluded.iter().map(|(_, at)| *at).max().unwrap() - start;

    // The same work from Rust, on the same server and processes.
    let (backend, _) = RedisBackend::connect(app::config(&url)).await.unwrap();
    let store = Store::new(&backend);
    let started = Instant::now();
    let mut rust_batches = Vec::new();
    for i in 0..BATCHES {
        let sha = format!("{:040x}", 1000 + i);
        let request = NewRequest {
            uris: vec![format!("file:///srv/search/refs%2Fheads%2Fc{i}/{sha}")],
            strategy: LandStrategy::Unset,
        };
        rust_batches.push(
            submit(&backend, &store, "search", &[request])
                .await
                .unwrap()
                .id,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    'wait: loop {
        assert!(
            Instant::now() < deadline,
            "Rust-submitted batches did not conclude"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        for id in &rust_batches {
            let batch = store.batch(id).await.unwrap().unwrap();
            if !matches!(batch.state(), BatchState::Succeeded | BatchState::Failed) {
                continue 'wait;
            }
        }
        break;
    }
    let rust_ms = started.elapsed().as_millis() as u64;

    let ts_out = wait_output(
        ts,
        "the TypeScript merge-signal watcher",
        Duration::from_secs(60),
    );
    let results: BTreeSet<String> = tagged(&ts_out, "result ")
        .iter()
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect();
    let everything: BTreeSet<String> = submitted
        .iter()
        .cloned()
        .chain(rust_batches.iter().cloned())
        .collect();
    assert_eq!(results, everything, "TypeScript saw every MergeResult");
    assert!(
        tagged(&ts_out, "result ")
            .iter()
            .all(|l| l.contains(" SUCCEEDED ")),
        "{ts_out}"
    );

    let rate = |ms: u64| BATCHES as f64 * 1000.0 / ms.max(1) as f64;
    println!(
        "{BATCHES} batches submitted to conclude: Python→Rust→Python/TypeScript {:.0} batches/s \
         ({cross_ms} ms), Rust only {:.0} batches/s ({rust_ms} ms), same server and processes",
        rate(cross_ms),
        rate(rust_ms)
    );

    // The Rust process stops cleanly and logged no panic.
    stop_cleanly(workers.0.remove(0), "keyway run all");
    let _ = fs::remove_file(&config);
}

/// Stop `child` (a `keyway run` process, `what`) with SIGTERM: it exits with success and its
/// log has no panic.
fn stop_cleanly(mut child: Child, what: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut log = String::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    assert!(status.success(), "{what} exited with {status}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}

// Shared by the tests below: a server of their own, peers in the other languages, raw reads.

/// The interpreters, or `None` after saying why the test is skipped.
fn interpreters_or_skip() -> Option<&'static (PathBuf, PathBuf)> {
    match interpreters() {
        Ok(both) => Some(both),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A `redis-server` of the test's own, on a free loopback port.
fn own_server() -> EmbeddedRedis {
    EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts")
}

async fn backend(url: &str) -> RedisBackend {
    RedisBackend::connect(app::config(url))
        .await
        .expect("the Rust backend connects")
        .0
}

/// Reads one JSON command per line on standard input and answers each on standard output:
/// - `publish`: a `MergeResult` on `merge-signal` with the typed producer; prints its receipt
///   (`published` or `duplicate`);
/// - `raw`: `payload` as it is, through the publish script, on any topic; prints
///   `published <entry id>` or `duplicate`;
/// - `submit`: a batch of one change to a queue; prints `batch <id>`;
/// - `consume`: handles `merge-signal` as a group until `n` messages are settled for good,
///   printing `got <id> <attempt> <result id> <by>` for each delivery, then `done`. Each
///   delivery takes a few milliseconds of varying work. With `judge`, the first attempt of
///   an id in `retry_first` is retried and every message is then rejected with `reason` and
///   `detail`; without it every message is acknowledged.
const PYTHON_PEER: &str = r#"
import asyncio, json, os, sys
import redis.asyncio as aioredis
from keyway import ACK, Backoff, Client, Reject, Retry, Subscription, topics
from keyway._protocol import dedup_key, stream_key
from keyway.merge import NewRequest, submit
from keyway.runway import messagequeue_pb2 as mq

def say(line):
    print(line, flush=True)

async def consume(client, cmd):
    want, settled, done = cmd["n"], [0], asyncio.Event()
    judge = cmd.get("judge")

    async def handle(result, delivery):
        say(f"got {delivery.id} {delivery.attempt} {result.id} {delivery.metadata.get('by', '-')}")
        await asyncio.sleep(((settled[0] * 7) % 5) / 1000)
        if judge is not None and delivery.id in judge["retry_first"] and delivery.attempt == 1:
            return Retry(judge["retry_reason"])
        settled[0] += 1
        if settled[0] >= want:
            done.set()
        if judge is not None:
            return Reject(judge["reason"], **judge["detail"])
        return ACK

    sub = Subscription(backoff=Backoff(initial=0.05, multiplier=2.0, max=1.0))
    await client.consumer(topics.topic(cmd["topic"]), cmd["group"], handle, sub).run(done)
    say("done")

async def main():
    r = aioredis.from_url(os.environ["REDIS_URL"])
    client = Client(r)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "publish":
            message = mq.MergeResult(id=cmd["result"], queue_name=cmd["pk"], outcome=mq.SUCCEEDED)
            receipt = await topics.merge_signal_producer(client).publish(
                message, id=cmd["id"], partition_key=cmd["pk"], metadata=cmd.get("metadata"))
            say(receipt.value)
        elif op == "raw":
            stream = client.registry.stream_for(cmd["topic"], cmd["pk"])
            keys = [stream_key(client.key_prefix, stream),
                    dedup_key(client.key_prefix, stream, cmd["pk"], cmd["id"])]
            args = [int(client.dedup_ttl * 1000), cmd["id"], cmd["pk"], cmd["payload"].encode()]
            reply = await client.run_script("publish", keys, args)
            say("duplicate" if reply == 0 else f"published {reply.decode()}")
        elif op == "submit":
            batch = await submit(client, cmd["queue"], [NewRequest(uris=[cmd["uri"]])])
            say(f"batch {batch.id}")
        elif op == "consume":
            await consume(client, cmd)
        else:
            say(f"unknown command {op}")
    await r.aclose()

asyncio.run(main())
"#;

/// The TypeScript side of `PYTHON_PEER`'s `publish` command, run from `clients/typescript`.
const NODE_PEER: &str = r#"
import { createInterface } from "node:readline";
import { Redis } from "ioredis";
import { Keyway } from "./dist/src/index.js";
import { Outcome } from "./dist/src/gen/keyway/runway/messagequeue_pb.js";
import { mergeSignalProducer } from "./dist/src/gen/topics.js";

const keyway = new Keyway(new Redis(process.env.REDIS_URL));
const producer = mergeSignalProducer(keyway);
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  if (cmd.op !== "publish") {
    console.log(`unknown command ${cmd.op}`);
    continue;
  }
  const result = { id: cmd.result, queueName: cmd.pk, outcome: Outcome.SUCCEEDED };
  const receipt = await producer.publish(result, { id: cmd.id, partitionKey: cmd.pk, metadata: cmd.metadata });
  console.log(receipt.status);
}
await keyway.redis.quit();
"#;

/// A Python or Node.js process answering one command line at a time.
struct Peer {
    what: &'static str,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Peer {
    fn python(python: &Path, url: &str) -> Peer {
        let mut command = tokio::process::Command::new(python);
        command
            .arg("-c")
            .arg(PYTHON_PEER)
            .env("PYTHONPATH", root().join("clients/python/src"));
        Peer::start("the Python peer", command, url)
    }

    fn node(node: &Path, url: &str) -> Peer {
        let mut command = tokio::process::Command::new(node);
        command
            .args(["--input-type=module", "-e", NODE_PEER])
            .current_dir(root().join("clients/typescript"));
        Peer::start("the TypeScript peer", command, url)
    }

    fn start(what: &'static str, mut command: tokio::process::Command, url: &str) -> Peer {
        let mut child = command
            .env("REDIS_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        Peer {
            what,
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    async fn send(&mut self, command: &serde_json::Value) {
        let mut line = command.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(e) = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await
        {
            self.fail(&format!("cannot send {command}: {e}")).await;
        }
    }

    /// The next line it prints.
    async fn line(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(20), self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => self.fail("it stopped answering").await,
            Ok(Err(e)) => self.fail(&format!("reading its answer: {e}")).await,
            Err(_) => self.fail("no answer within 20 s").await,
        }
    }

    async fn ask(&mut self, command: serde_json::Value) -> String {
        self.send(&command).await;
        self.line().await
    }

    async fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.start_kill();
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut err)).await;
        }
        panic!("{}: {why}\n{err}", self.what);
    }

    /// Close its input and check that it exits cleanly.
    async fn finish(mut self) {
        self.stdin = None;
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => self.fail(&format!("exited with {status}")).await,
            Ok(Err(e)) => self.fail(&format!("waiting for it: {e}")).await,
            Err(_) => self.fail("did not exit within 10 s").await,
        }
    }
}

/// The `publish` command of a peer: a `MergeResult` with id `result` and metadata `by`.
fn publish_command(id: &str, pk: &str, result: &str, by: &str) -> serde_json::Value {
    json!({"op": "publish", "id": id, "pk": pk, "result": result, "metadata": {"by": by}})
}

fn merge_result(result: &str, pk: &str) -> MergeResult {
    MergeResult {
        id: result.to_owned(),
        queue_name: pk.to_owned(),
        outcome: MergeOutcome::Succeeded as i32,
        ..Default::default()
    }
}

/// Publishes on `merge-signal` from Rust as a peer's `publish` command does.
async fn rust_publish(
    producer: &Producer<MergeSignal, RedisBackend>,
    id: &str,
    pk: &str,
    result: &str,
    by: &str,
) -> PublishReceipt {
    producer
        .publish(
            &merge_result(result, pk),
            MessageId::new(id).unwrap(),
            pk,
            Metadata::from([("by".to_owned(), by.to_owned())]),
        )
        .await
        .unwrap_or_else(|e| panic!("Rust publishing {id}: {e}"))
}

async fn command(backend: &RedisBackend, name: &'static str, args: Vec<Value>) -> Value {
    backend
        .client()
        .custom::<Value, Value>(
            CustomCommand::new_static(name, ClusterHash::FirstKey, false),
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The key of stream `stream` (with the default prefix).
fn stream_key(stream: &str) -> String {
    let tag = stream.strip_suffix("_dlq").unwrap_or(stream);
    format!("kw:{{{tag}}}:s:{stream}")
}

fn text(value: &Value) -> String {
    match value {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.as_string().unwrap_or_default(),
    }
}

/// One stream entry as stored: its entry id and its fields in order.
#[derive(Debug, Clone)]
struct Entry {
    entry: String,
    fields: Vec<(String, String)>,
}

impl Entry {
    fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("entry {} has no field {name}: {:?}", self.entry, self))
    }

    fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The `id` field of the payload's JSON.
    fn payload_id(&self) -> String {
        let payload: serde_json::Value = serde_json::from_str(self.get("payload"))
            .unwrap_or_else(|e| panic!("payload of {}: {e}", self.entry));
        payload["id"].as_str().unwrap_or_default().to_owned()
    }
}

/// Every entry of `stream`, oldest first.
async fn entries(backend: &RedisBackend, stream: &str) -> Vec<Entry> {
    let args = vec![stream_key(stream).into(), "-".into(), "+".into()];
    let reply = command(backend, "XRANGE", args).await;
    let mut out = Vec::new();
    for item in reply.into_array() {
        let mut parts = item.into_array().into_iter();
        let (Some(entry), Some(flat)) = (parts.next(), parts.next()) else {
            panic!("XRANGE {stream}: an entry without fields");
        };
        let flat = flat.into_array();
        let fields = flat
            .chunks(2)
            .map(|kv| (text(&kv[0]), kv.get(1).map(text).unwrap_or_default()))
            .collect();
        out.push(Entry {
            entry: text(&entry),
            fields,
        });
    }
    out
}

async fn stream_len(backend: &RedisBackend, stream: &str) -> usize {
    let len = command(backend, "XLEN", vec![stream_key(stream).into()]).await;
    len.as_u64().expect("XLEN answers a number") as usize
}

/// Wait (at most 10 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `got` line of a Python consumer: message id, attempt, result id, `by`.
fn got(line: &str) -> (String, u32, String, String) {
    let mut parts = line
        .strip_prefix("got ")
        .unwrap_or_else(|| panic!("expected a `got` line, found {line:?}"))
        .split(' ');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    let (id, attempt, result, by) = (next(), next(), next(), next());
    (id, attempt.parse().unwrap(), result, by)
}

/// Reads a Python consumer's `got` lines up to its `done`.
async fn consumed(peer: &mut Peer) -> Vec<(String, u32, String, String)> {
    let mut out = Vec::new();
    loop {
        let line = peer.line().await;
        if line == "done" {
            return out;
        }
        out.push(got(&line));
    }
}

/// One delivery a Rust handler was handed.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: String,
    attempt: u32,
    result: String,
    by: String,
}

const RETRY_REASON: &str = "the change is still being fetched";
const REJECT_REASON: &str = "step s1 names a change that does not exist";

/// Records every `merge-signal` delivery, with a few milliseconds of varying work each. A
/// judging one retries the first attempt of `retry_first` and then rejects every message with
/// `REJECT_REASON` and detail `step` = `s1`; otherwise it acknowledges.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    judging: bool,
    retry_first: &'static [&'static str],
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl TopicHandler<MergeSignal> for Recorder {
    async fn handle(
        &self,
        message: MergeResult,
        delivery: &Delivery,
    ) -> Result<Handled, HandlerError> {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(Seen {
                id: delivery.id.clone(),
                attempt: delivery.attempt,
                result: message.id,
                by: delivery.metadata.get("by").cloned().unwrap_or_default(),
            });
            seen.len()
        };
        tokio::time::sleep(Duration::from_millis((n as u64 * 7) % 5)).await;
        if !self.judging {
            return Ok(Handled::Ack);
        }
        if delivery.attempt == 1 && self.retry_first.contains(&delivery.id.as_str()) {
            return Err(HandlerError::retryable(RETRY_REASON));
        }
        Err(HandlerError::permanent(REJECT_REASON).with_detail("step", "s1"))
    }
}

/// A subscription to `merge-signal` whose retries come after 50 ms.
fn quick_subscription(group: &str) -> SubscriptionConfig {
    SubscriptionConfig {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_secs(1),
        },
        ..SubscriptionConfig::new("merge-signal", group)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_id_is_one_entry_whichever_language_publishes_it() {
    let Some((node, python)) = interpreters_or_skip() else {
        return;
    };
    let server = own_server();
    let url = server.url();
    let backend = backend(&url).await;
    let rust = Producer::<MergeSignal, _>::new(backend.clone());
    let mut py = Peer::python(python, &url);
    let mut ts = Peer::node(node, &url);

    // Python first: Rust and TypeScript are told theirs is a duplicate.
    let (id, pk) = ("dedup/python-first", "dedup");
    assert_eq!(
        py.ask(publish_command(id, pk, "dedup/batch/1", "python"))
            .await,
        "published"
    );
    let receipt = rust_publish(&rust, id, pk, "dedup/batch/1", "rust").await;
    assert_eq!(receipt, PublishReceipt::Duplicate, "Rust after Python");
    assert_eq!(
        ts.ask(publish_command(id, pk, "dedup/batch/1", "typescript"))
            .await,
        "duplicate",
        "TypeScript after Python"
    );
    assert_eq!(stream_len(&backend, "merge-signal").await, 1);

    // Rust first: Python and TypeScript are told theirs is a duplicate.
    let id = "dedup/rust-first";
    let receipt = rust_publish(&rust, id, pk, "dedup/batch/2", "rust").await;
    assert_eq!(receipt, PublishReceipt::Published);
    assert_eq!(
        py.ask(publish_command(id, pk, "dedup/batch/2", "python"))
            .await,
        "duplicate",
        "Python after Rust"
    );
    assert_eq!(
        ts.ask(publish_command(id, pk, "dedup/batch/2", "typescript"))
            .await,
        "duplicate",
        "TypeScript after Rust"
    );
    let receipt = rust_publish(&rust, id, pk, "dedup/batch/2", "rust").await;
    assert_eq!(receipt, PublishReceipt::Duplicate, "Rust after itself");
    assert_eq!(stream_len(&backend, "merge-signal").await, 2);

    // TypeScript first.
    let id = "dedup/typescript-first";
    assert_eq!(
        ts.ask(publish_command(id, pk, "dedup/batch/3", "typescript"))
            .await,
        "published"
    );
    assert_eq!(
        py.ask(publish_command(id, pk, "dedup/batch/3", "python"))
            .await,
        "duplicate",
        "Python after TypeScript"
    );
    let receipt = rust_publish(&rust, id, pk, "dedup/batch/3", "rust").await;
    assert_eq!(receipt, PublishReceipt::Duplicate, "Rust after TypeScript");
    assert_eq!(stream_len(&backend, "merge-signal").await, 3);

    // The same id under another partition key is another message, in every language.
    let (id, other) = ("dedup/python-first", "dedup-other");
    assert_eq!(
        py.ask(publish_command(id, other, "dedup/batch/4", "python"))
            .await,
        "published",
        "another partition key"
    );
    let receipt = rust_publish(&rust, id, other, "dedup/batch/4", "rust").await;
    assert_eq!(
        receipt,
        PublishReceipt::Duplicate,
        "Rust, other partition key"
    );
    assert_eq!(stream_len(&backend, "merge-signal").await, 4);

    // Each entry is the first publisher's.
    let stored: Vec<(String, String, String, String)> = entries(&backend, "merge-signal")
        .await
        .iter()
        .map(|e| {
            let field = |n: &str| e.get(n).to_owned();
            (field("id"), field("pk"), e.payload_id(), field("m:by"))
        })
        .collect();
    let expected = [
        ("dedup/python-first", pk, "dedup/batch/1", "python"),
        ("dedup/rust-first", pk, "dedup/batch/2", "rust"),
        ("dedup/typescript-first", pk, "dedup/batch/3", "typescript"),
        ("dedup/python-first", other, "dedup/batch/4", "python"),
    ]
    .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()));
    assert_eq!(stored, expected);
    py.finish().await;
    ts.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_partition_keeps_publish_order_across_producers_and_consumers() {
    const MESSAGES: usize = 30;
    let Some((node, python)) = interpreters_or_skip() else {
        return;
    };
    let server = own_server();
    let url = server.url();
    let backend = backend(&url).await;

    // Both consumers run from the start, so they handle messages while others arrive.
    let recorder = Recorder::default();
    let (trigger, shutdown) = Shutdown::new();
    let consuming = {
        let (backend, handler) = (backend.clone(), Consumer::new(recorder.clone()));
        let sub = quick_subscription("rust-order");
        tokio::spawn(async move { backend.run(sub, Arc::new(handler), shutdown).await })
    };
    let mut py_consumer = Peer::python(python, &url);
    let consume =
        json!({"op": "consume", "topic": "merge-signal", "group": "py-order", "n": MESSAGES});
    py_consumer.send(&consume).await;

    let rust = Producer::<MergeSignal, _>::new(backend.clone());
    let mut py = Peer::python(python, &url);
    let mut ts = Peer::node(node, &url);
    let pk = "ordered";
    let mut expected = Vec::new();
    for i in 0..MESSAGES {
        let (id, result) = (format!("order/{i:02}"), format!("ordered/batch/{i}"));
        let by = ["rust", "python", "typescript"][i % 3];
        let receipt = match by {
            "rust" => {
                let r = rust_publish(&rust, &id, pk, &result, by).await;
                assert_eq!(r, PublishReceipt::Published);
                "published".to_owned()
            }
            "python" => py.ask(publish_command(&id, pk, &result, by)).await,
            _ => ts.ask(publish_command(&id, pk, &result, by)).await,
        };
        assert_eq!(receipt, "published", "{by} publishing {id}");
        expected.push((id, 1, result, by.to_owned()));
    }

    let stored: Vec<String> = entries(&backend, "merge-signal")
        .await
        .iter()
        .map(|e| e.get("id").to_owned())
        .collect();
    let ids: Vec<String> = expected.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(stored, ids, "the stream holds them in publish order");

    let by_python = consumed(&mut py_consumer).await;
    assert_eq!(by_python, expected, "the Python consumer's order");
    eventually("the Rust consumer handles every message", || {
        let n = recorder.seen().len();
        async move { n >= MESSAGES }
    })
    .await;
    let by_rust: Vec<(String, u32, String, String)> = recorder
        .seen()
        .into_iter()
        .map(|s| (s.id, s.attempt, s.result, s.by))
        .collect();
    assert_eq!(by_rust, expected, "the Rust consumer's order");

    trigger.trigger();
    consuming
        .await
        .unwrap()
        .expect("the Rust consumer stops cleanly");
    py_consumer.finish().await;
    py.finish().await;
    ts.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_payload_from_python_is_dead_lettered_by_keyway_run_and_its_key_flows_on() {
    const BATCH_REF: &str = "keyway.orchestrator.v1.BatchRef";
    let Some((_, python)) = interpreters_or_skip() else {
        return;
    };
    let server = own_server();
    let url = server.url();
    let backend = backend(&url).await;
    let rust = Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["run", "merge"])
        .env("REDIS_URL", &url)
        .env_remove("KEYWAY_CONFIG")
        .env_remove("KEYWAY_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyway run merge starts");
    let mut workers = Killed(vec![rust]);

    // Two payloads that are no `BatchRef`, then a real batch, all under the queue's key.
    let mut py = Peer::python(python, &url);
    let queue = "payments";
    let poisons = [
        (
            "poison/not-json",
            "{\"id\": \"payments/batch/7\", \"queue\"",
        ),
        (
            "poison/wrong-type",
            "{\"id\":\"payments/batch/8\",\"queue\":7}",
        ),
    ];
    let mut poison_entries = Vec::new();
    for (id, payload) in poisons {
        let raw = json!({"op": "raw", "topic": "submitqueue-merge", "id": id, "pk": queue, "payload": payload});
        let answer = py.ask(raw).await;
        let entry = answer
            .strip_prefix("published ")
            .unwrap_or_else(|| panic!("publishing {id}: {answer}"));
        poison_entries.push(entry.to_owned());
    }
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let uri = format!("file:///srv/payments.git/refs%2Fheads%2Ffix/{sha}");
    let answer = py
        .ask(json!({"op": "submit", "queue": queue, "uri": uri}))
        .await;
    let batch = answer
        .strip_prefix("batch ")
        .unwrap_or_else(|| panic!("submitting: {answer}"))
        .to_owned();

    // The batch behind them was handed on to Runway.
    eventually("the batch reaches runway-merge", || {
        let backend = backend.clone();
        let batch = batch.clone();
        async move {
            let handed = entries(&backend, "runway-merge").await;
            handed.iter().any(|e| e.payload_id() == batch)
        }
    })
    .await;
    let handed = entries(&backend, "runway-merge").await;
    assert_eq!(handed.len(), 1, "{handed:?}");
    assert_eq!(handed[0].get("pk"), queue);

    // Both poisons, and nothing else, were dead-lettered with what did not decode.
    let dead = entries(&backend, "submitqueue-merge_dlq").await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let prefix = format!("payload does not decode as {BATCH_REF}: ");
    for ((letter, (id, payload)), entry) in dead.iter().zip(poisons).zip(&poison_entries) {
        assert_eq!(letter.get("id"), id);
        assert_eq!(letter.get("pk"), queue);
        assert_eq!(letter.get("payload"), payload);
        assert_eq!(letter.get("m:dlq.original_topic"), "submitqueue-merge");
        assert_eq!(letter.get("m:dlq.failure_count"), "1");
        assert_eq!(letter.get("m:dlq.stream_entry"), entry);
        assert_eq!(letter.get("m:dlq.detail.kind"), "decode");
        assert_eq!(letter.get("m:dlq.detail.message"), BATCH_REF);
        let offset: usize = letter.get("m:dlq.detail.offset").parse().unwrap();
        assert!(offset <= payload.len(), "{letter:?}");
        let reason = letter.get("m:dlq.last_error");
        assert!(
            reason.starts_with(&prefix) && reason.len() > prefix.len(),
            "{id}: {reason}"
        );
    }
    assert_eq!(dead[1].get("m:dlq.detail.path"), "queue", "{:?}", dead[1]);
    assert!(
        dead[1].get("m:dlq.last_error").contains("queue"),
        "{:?}",
        dead[1]
    );
    assert!(
        dead[0]
            .get("m:dlq.last_error")
            .to_lowercase()
            .contains("json"),
        "{:?}",
        dead[0]
    );

    // The process is still running, stops cleanly and logged no panic.
    let mut rust = workers.0.remove(0);
    assert!(
        rust.try_wait().unwrap().is_none(),
        "keyway run merge exited"
    );
    stop_cleanly(rust, "keyway run merge");
    py.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_rejection_dead_letters_as_a_rust_rejection_does() {
    const AT_ONCE: &str = "judge/at-once";
    const AFTER_RETRY: &str = "judge/after-retry";
    let Some((_, python)) = interpreters_or_skip() else {
        return;
    };
    let server = own_server();
    let url = server.url();
    let backend = backend(&url).await;

    // One message from each language; each group below rejects both.
    let pk = "judged";
    let rust = Producer::<MergeSignal, _>::new(backend.clone());
    let receipt = rust_publish(&rust, AT_ONCE, pk, "judged/batch/1", "rust").await;
    assert_eq!(receipt, PublishReceipt::Published);
    let mut py = Peer::python(python, &url);
    let answer = py
        .ask(publish_command(AFTER_RETRY, pk, "judged/batch/2", "python"))
        .await;
    assert_eq!(answer, "published");
    let originals = entries(&backend, "merge-signal").await;
    assert_eq!(originals.len(), 2);

    // The Rust group's rejections first, then the Python group's, of the same two entries.
    let judge = Recorder {
        judging: true,
        retry_first: &[AFTER_RETRY],
        ..Recorder::default()
    };
    let (trigger, shutdown) = Shutdown::new();
    let consuming = {
        let (backend, handler) = (backend.clone(), Consumer::new(judge.clone()));
        let sub = quick_subscription("rust-judge");
        tokio::spawn(async move { backend.run(sub, Arc::new(handler), shutdown).await })
    };
    eventually("the Rust group dead-letters both", || {
        let backend = backend.clone();
        async move { stream_len(&backend, "merge-signal_dlq").await >= 2 }
    })
    .await;
    trigger.trigger();
    consuming
        .await
        .unwrap()
        .expect("the Rust consumer stops cleanly");

    let judging = json!({
        "op": "consume", "topic": "merge-signal", "group": "py-judge", "n": 2,
        "judge": {
            "retry_first": [AFTER_RETRY], "retry_reason": RETRY_REASON,
            "reason": REJECT_REASON, "detail": {"step": "s1"},
        },
    });
    py.send(&judging).await;
    let by_python: Vec<(String, u32)> = consumed(&mut py)
        .await
        .into_iter()
        .map(|(id, attempt, ..)| (id, attempt))
        .collect();
    let by_rust: Vec<(String, u32)> = judge
        .seen()
        .into_iter()
        .map(|s| (s.id, s.attempt))
        .collect();
    let attempts =
        [(AT_ONCE, 1), (AFTER_RETRY, 1), (AFTER_RETRY, 2)].map(|(id, a)| (id.to_owned(), a));
    assert_eq!(by_rust, attempts, "the Rust handler's deliveries");
    assert_eq!(by_python, attempts, "the Python handler's deliveries");
    eventually("the Python group dead-letters both", || {
        let backend = backend.clone();
        async move { stream_len(&backend, "merge-signal_dlq").await >= 4 }
    })
    .await;

    let dead = entries(&backend, "merge-signal_dlq").await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    let (from_rust, from_python) = dead.split_at(2);
    let expected_names = [
        "id",
        "pk",
        "at",
        "payload",
        "v",
        "m:by",
        "m:dlq.original_topic",
        "m:dlq.failure_count",
        "m:dlq.last_error",
        "m:dlq.failed_at",
        "m:dlq.stream_entry",
        "m:dlq.detail.step",
    ];
    for (original, failures) in originals.iter().zip(["1", "2"]) {
        let id = original.get("id");
        let find = |letters: &[Entry]| {
            let mut of = letters.iter().filter(|l| l.get("id") == id);
            let letter = of
                .next()
                .unwrap_or_else(|| panic!("no dead letter of {id}"));
            assert!(of.next().is_none(), "{id} was dead-lettered twice");
            letter.clone()
        };
        let (rust_letter, python_letter) = (find(from_rust), find(from_python));
        assert_eq!(rust_letter.names(), expected_names, "{rust_letter:?}");
        assert_eq!(
            python_letter.names(),
            rust_letter.names(),
            "the same fields, in the same order"
        );
        for letter in [&rust_letter, &python_letter] {
            assert_eq!(letter.get("m:dlq.original_topic"), "merge-signal");
            assert_eq!(letter.get("m:dlq.failure_count"), failures, "{id}");
            assert_eq!(letter.get("m:dlq.last_error"), REJECT_REASON);
            assert_eq!(letter.get("m:dlq.stream_entry"), original.entry);
            assert_eq!(letter.get("m:dlq.detail.step"), "s1");
            // The original fields, copied unchanged.
            assert_eq!(&letter.fields[..6], &original.fields[..], "{id}");
            let failed_at: u64 = letter.get("m:dlq.failed_at").parse().unwrap();
            let at: u64 = original.get("at").parse().unwrap();
            assert!(failed_at >= at, "{letter:?}");
        }
        let but_the_time = |letter: &Entry| {
            let mut fields = letter.fields.clone();
            fields.retain(|(name, _)| name != "m:dlq.failed_at");
            fields
        };
        assert_eq!(
            but_the_time(&python_letter),
            but_the_time(&rust_letter),
            "{id}: every field but the time agrees"
        );
    }
    py.finish().await;
}
