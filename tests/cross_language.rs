//! Three languages on one queue: a Python producer submits batches, the Rust `keyway run all`
//! process lands them (fake merger), a TypeScript consumer sees every `MergeResult` on
//! `merge-signal` in a group of its own, and a Python consumer sees every `conclude`. Then the
//! same number of batches is submitted from Rust on the same server and processes, and both
//! throughputs are printed side by side.
//!
//! Node.js and the Python client's virtualenv are set up as `tests/clients_typescript.rs` and
//! `tests/clients_python.rs` set them up (the same directories and stamps); a missing
//! interpreter fails `interpreters_are_available` with the command to install it and the other
//! test says it was skipped.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyway::orchestrator::{BatchState, LandStrategy};
use keyway::stages::submit::{submit, NewRequest};
use keyway::stages::{app, store::Store};
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend};

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
    let mut rust = workers.0.remove(0);
    let _ = Command::new("kill")
        .args(["-TERM", &rust.id().to_string()])
        .status();
    let status = rust.wait().unwrap();
    let mut log = String::new();
    if let Some(err) = rust.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    assert!(
        status.success(),
        "keyway run all exited with {status}:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    let _ = fs::remove_file(&config);
}
