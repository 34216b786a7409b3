//! The TypeScript client (`clients/typescript`): its checked-in generated code is what the
//! generators write today, its copies of the Lua scripts are the runtime's, its own tests pass
//! on a real redis-server, and the README's example runs.
//!
//! Node.js is set up as the oracles are: `npm ci` of the package's lockfile into
//! `clients/typescript/node_modules` on first use, stamped with the lockfile. A missing `node`
//! or `npm` fails `node_is_available` with the command to install it; the other tests that need
//! Node say they were skipped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use keyway_runtime::redis::config::bucket_of;
use keyway_runtime::redis::{EmbeddedCluster, EmbeddedOptions, EmbeddedRedis};
use prost_reflect::DescriptorPool;

use keyway_codegen::clients::typescript;

const NODE_INSTALL: &str =
    "Debian/Ubuntu: `apt-get install nodejs npm`, macOS: `brew install node`";
/// In `node_modules`: the lockfile it was installed from.
const NODE_STAMP: &str = ".keyway-lock-stamp";

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

fn bless() -> bool {
    std::env::var_os("KEYWAY_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The descriptor pool of both trees the client covers: the runway contract and the
/// orchestrator's payloads.
fn pool() -> DescriptorPool {
    let mut pool =
        DescriptorPool::decode(keyway::DESCRIPTOR_SET).expect("the contract's set decodes");
    pool.decode_file_descriptor_set(keyway::orchestrator::DESCRIPTOR_SET)
        .expect("the orchestrator's set adds to it");
    pool
}

/// The registry module as the generator writes it today.
fn registry() -> String {
    let compiled = keyway_codegen::Compiled::from_pool(pool());
    let bindings = compiled
        .topic_bindings(None)
        .expect("the contract's bindings are valid");
    typescript::typescript_registry(&compiled.pool, &bindings)
}

/// Run `command` to the end: its standard output, or a message with everything it printed.
fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    Err(format!(
        "{what}: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// `node`, with the package's dependencies installed, once per process; or one line saying
/// what is missing and how to install it.
fn node() -> Result<&'static Path, &'static str> {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    NODE.get_or_init(setup).as_deref().map_err(String::as_str)
}

/// The package compiled (`tsc -p .` into `dist/`), once per process.
fn build(node: &Path) -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            run(
                Command::new(node)
                    .arg("node_modules/typescript/bin/tsc")
                    .args(["-p", "."])
                    .current_dir(package()),
                "`tsc -p clients/typescript`",
            )
            .map(drop)
        })
        .clone()
}

fn setup() -> Result<PathBuf, String> {
    let node = PathBuf::from(std::env::var_os("KEYWAY_NODE").unwrap_or_else(|| "node".into()));
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(format!(
                "`{} --version` failed: {}",
                node.display(),
                out.status
            ))
        }
        Err(_) => {
            return Err(format!(
                "{} is not on PATH; install Node.js 18 or newer ({NODE_INSTALL})",
                node.display()
            ))
        }
    }
    let dir = package();
    let lockfile = fs::read_to_string(dir.join("package-lock.json"))
        .map_err(|e| format!("cannot read clients/typescript/package-lock.json: {e}"))?;
    let stamp = dir.join("node_modules").join(NODE_STAMP);
    if !fs::read_to_string(&stamp).is_ok_and(|installed| installed == lockfile) {
        // `npm ci` removes node_modules first, stamp included: the stamp, written last, marks a
        // complete install.
        match Command::new("npm").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => return Err(format!("npm is not on PATH; install it ({NODE_INSTALL})")),
        }
        run(
            Command::new("npm")
                .arg("ci")
                .arg("--prefix")
                .arg(&dir)
                .args(["--no-audit", "--no-fund"]),
            "`npm ci --prefix clients/typescript`",
        )?;
        fs::write(&stamp, &lockfile)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    Ok(node)
}

/// Node for a test that needs it, or `None` after saying the test was skipped (the reason is
/// `node_is_available`'s failure).
fn node_or_skip(test: &str) -> Option<&'static Path> {
    match node() {
        Ok(node) => Some(node),
        Err(why) => {
            eprintln!("{test}: skipped, Node.js is not set up: {why}");
            None
        }
    }
}

#[test]
fn node_is_available() {
    if let Err(why) = node() {
        panic!("the TypeScript client's tests need Node.js: {why}");
    }
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(bytes) = fs::read(&path) {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(name, bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Compare `want` (what the generators write) with the files in `dir`; with `KEYWAY_BLESS`
/// rewrite `dir` instead. Files in `dir` that are not wanted are stale too.
fn check_tree(dir: &Path, want: &BTreeMap<String, Vec<u8>>, how: &str) {
    let have = tree(dir);
    if bless() {
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            fs::remove_file(dir.join(name)).unwrap();
        }
        for (name, bytes) in want {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
        return;
    }
    let mut stale = Vec::new();
    for (name, bytes) in want {
        match have.get(name) {
            Some(b) if b == bytes => {}
            Some(_) => stale.push(format!("{name} differs")),
            None => stale.push(format!("{name} is missing")),
        }
    }
    for name in have.keys().filter(|n| !want.contains_key(*n)) {
        stale.push(format!("{name} is not generated any more"));
    }
    assert!(
        stale.is_empty(),
        "{} is stale ({}); regenerate with `KEYWAY_BLESS=1 cargo test -p keyway --test clients_typescript` ({how})",
        dir.display(),
        stale.join(", ")
    );
}

#[test]
fn checked_in_generated_code_is_fresh() {
    let mut want = BTreeMap::new();
    want.insert("topics.ts".to_owned(), registry().into_bytes());
    let Some(node) = node_or_skip("checked_in_generated_code_is_fresh") else {
        // Without Node only the registry can be checked.
        let have = fs::read(package().join("src/gen/topics.ts")).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&have),
            String::from_utf8_lossy(&want["topics.ts"]),
            "clients/typescript/src/gen/topics.ts is stale"
        );
        return;
    };
    let scratch = std::env::temp_dir().join(format!("keyway-ts-gen-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).unwrap();
    let sets = [
        ("contract.binpb", keyway::DESCRIPTOR_SET),
        ("orchestrator.binpb", keyway::orchestrator::DESCRIPTOR_SET),
    ];
    for (name, bytes) in sets {
        fs::write(scratch.join(name), bytes).unwrap();
    }
    let out = scratch.join("gen");
    run(
        Command::new(node)
            .arg("scripts/generate.mjs")
            .arg("--out")
            .arg(&out)
            .args(sets.map(|(name, _)| scratch.join(name)))
            .current_dir(package()),
        "`node scripts/generate.mjs`",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    want.extend(tree(&out));
    assert!(
        want.contains_key("keyway/runway/messagequeue_pb.ts")
            && want.contains_key("keyway/orchestrator/v1/messages_pb.ts"),
        "protoc-gen-es wrote {:?}",
        want.keys().collect::<Vec<_>>()
    );
    let _ = fs::remove_dir_all(&scratch);
    check_tree(
        &package().join("src/gen"),
        &want,
        "protoc-gen-es on the descriptor sets, and keyway-codegen's typescript_registry",
    );
}

#[test]
fn lua_copies_are_the_runtimes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let want: BTreeMap<String, Vec<u8>> = tree(&root.join("runtime/lua"))
        .into_iter()
        .filter(|(name, _)| name.ends_with(".lua"))
        .collect();
    assert!(want.contains_key("publish.lua") && want.contains_key("helpers.lua"));
    check_tree(&package().join("lua"), &want, "copies of runtime/lua/*.lua");
}

/// Rust's bucket choice for keys a test in TypeScript checks its own against.
fn bucket_vectors() -> String {
    let keys = ["", "a", "payments", "queue-7", "ü/ß", "🦀 key", "a:b:c"];
    let mut items = Vec::new();
    for key in keys {
        for n in [1u16, 2, 4, 13, 1024] {
            items.push(format!(
                "{{\"key\":{key:?},\"buckets\":{n},\"bucket\":{}}}",
                bucket_of(key, n)
            ));
        }
    }
    format!("[{}]", items.join(","))
}

#[test]
fn node_tests_pass() {
    let Some(node) = node_or_skip("node_tests_pass") else {
        return;
    };
    build(node).unwrap_or_else(|e| panic!("{e}"));
    let dir = package();
    let mut tests: Vec<PathBuf> = fs::read_dir(dir.join("dist/test"))
        .expect("tsc built dist/test")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".test.js"))
        .collect();
    tests.sort();
    assert!(
        tests.len() >= 2,
        "no compiled tests in dist/test: {tests:?}"
    );
    // The cluster test (`test/cluster.test.ts`) runs on a real local cluster.
    let cluster = EmbeddedCluster::shared().expect("a local Redis Cluster starts");
    let out = run(
        Command::new(node)
            .arg("--test")
            .args(&tests)
            .env("KEYWAY_BUCKET_VECTORS", bucket_vectors())
            .env(
                "KEYWAY_TEST_CLUSTER",
                format!("127.0.0.1:{}", cluster.nodes()[0].port()),
            )
            .current_dir(&dir),
        "`node --test dist/test/*.test.js` in clients/typescript",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The runner's summary: every test passed and some ran.
    let count = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label)?.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no `{label}` line in the runner's output:\n{out}"))
    };
    assert_eq!(count("# fail"), 0, "{out}");
    assert_eq!(count("# skipped"), 0, "every test ran: {out}");
    assert!(count("# pass") >= 10, "{out}");
}

/// The TypeScript code block of the README's "Using Keyway from TypeScript" section.
fn readme_example() -> String {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Using Keyway from TypeScript")
        .nth(1)
        .expect("README.md has a section \"Using Keyway from TypeScript\"");
    let block = section
        .split("```ts\n")
        .nth(1)
        .expect("the section has a ```ts code block");
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn readme_example_runs() {
    let example = readme_example();
    let checked_in = fs::read_to_string(package().join("examples/readme.ts")).unwrap_or_default();
    assert_eq!(
        example, checked_in,
        "the README's TypeScript example and clients/typescript/examples/readme.ts differ"
    );
    assert!(
        example.lines().count() <= 14,
        "the example is {} lines",
        example.lines().count()
    );
    let Some(node) = node_or_skip("readme_example_runs") else {
        return;
    };
    build(node).unwrap_or_else(|e| panic!("{e}"));
    let redis = EmbeddedRedis::start(EmbeddedOptions::default()).expect("redis-server starts");
    let out = run(
        Command::new(node)
            .arg("dist/examples/readme.js")
            .env("REDIS_URL", redis.url())
            .current_dir(package()),
        "the README's TypeScript example",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.contains("payments/batch/1 SUCCEEDED"),
        "the example printed:\n{out}"
    );
}
