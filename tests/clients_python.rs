//! The Python client (`clients/python`): its checked-in generated code (the topic registries,
//! the message classes) and its copies of the Lua scripts are what the generators and the
//! originals give today, and its pytest suite passes against a real `redis-server`.
//!
//! The suite runs in a virtualenv under `target/clients/python`, made on first use from
//! `clients/python/requirements.txt` (pinned) and made again when that file changes. A missing
//! `python3` or `venv` module fails `python_is_available` with the command that installs it;
//! the tests that need Python then print that they were skipped.
//!
//! `KEYWAY_BLESS=1 cargo test --test clients_python` rewrites the checked-in generated files
//! and the Lua copies instead of failing on a difference.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use keyway_codegen::clients::python::python_registry;
use keyway_runtime::redis::EmbeddedCluster;
use prost_reflect::DescriptorPool;

const PYTHON_INSTALL: &str =
    "Debian/Ubuntu: `apt-get install python3 python3-venv`, macOS: `brew install python`";
/// In the virtualenv: the requirements it was made from.
const STAMP: &str = ".keyway-requirements-stamp";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn client_dir() -> PathBuf {
    workspace().join("clients/python")
}

fn package_dir() -> PathBuf {
    client_dir().join("src/keyway")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace().join(dir),
        _ => workspace().join("target"),
    }
}

fn blessing() -> bool {
    std::env::var_os("KEYWAY_BLESS").is_some_and(|v| v == "1")
}

/// Run `command` to the end: its standard output, or why it did not succeed (`None` when the
/// program does not exist).
fn run(command: &mut Command) -> Result<String, Option<String>> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            None
        } else {
            Some(e.to_string())
        }
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(Some(format!(
            "{}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// The virtualenv's interpreter, made if needed (once per process), or what is missing.
fn python() -> Result<&'static Path, &'static str> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(make_venv)
        .as_deref()
        .map_err(String::as_str)
}

fn make_venv() -> Result<PathBuf, String> {
    let requirements_path = client_dir().join("requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .map_err(|e| format!("cannot read clients/python/requirements.txt: {e}"))?;
    let venv = target_dir().join("clients/python");
    let python = venv.join("bin/python");
    if fs::read_to_string(venv.join(STAMP)).is_ok_and(|s| s == requirements)
        && run(Command::new(&python).args(["-c", "import redis, google.protobuf, pytest"])).is_ok()
    {
        return Ok(python);
    }
    // Made aside and renamed into place, so a half-made one is never used.
    let parent = venv.parent().expect("the virtualenv has a parent");
    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = parent.join(format!("python.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    match run(Command::new("python3").args(["-m", "venv"]).arg(&staging)) {
        Ok(_) => {}
        Err(None) => {
            return Err(format!(
                "python3 is not on PATH; install it ({PYTHON_INSTALL})"
            ))
        }
        Err(Some(out)) if out.contains("ensurepip") || out.contains("No module named venv") => {
            return Err(
                "python3 cannot make a virtualenv: its venv/ensurepip module is missing; \
                 install it with `apt-get install python3-venv`"
                    .to_owned(),
            )
        }
        Err(Some(out)) => return Err(format!("`python3 -m venv` failed: {out}")),
    }
    let staged_python = staging.join("bin/python");
    run(Command::new(&staged_python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-r",
        ])
        .arg(&requirements_path))
    .map_err(|e| {
        format!(
            "`pip install -r clients/python/requirements.txt` into the virtualenv failed: {}",
            e.unwrap_or_else(|| "no interpreter in the new virtualenv".into())
        )
    })?;
    fs::write(staging.join(STAMP), &requirements)
        .map_err(|e| format!("cannot write the virtualenv's stamp: {e}"))?;
    let aside = parent.join(format!("python.stale-{}", std::process::id()));
    let _ = fs::rename(&venv, &aside);
    let _ = fs::remove_dir_all(&aside);
    if fs::rename(&staging, &venv).is_err() && !venv.join(STAMP).exists() {
        return Err(format!("cannot move the virtualenv to {}", venv.display()));
    }
    let _ = fs::remove_dir_all(&staging);
    // The interpreter's path is kept as the virtualenv was made (`bin/python` links to it).
    Ok(python)
}

/// The Python interpreter, or `None` after printing that the test was skipped (the reason is
/// the failure of `python_is_available`).
fn python_or_skip(test: &str) -> Option<&'static Path> {
    match python() {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("{test}: skipped, Python is not available: {why}");
            None
        }
    }
}

#[test]
fn python_is_available() {
    if let Err(why) = python() {
        panic!("the Python client's tests cannot run: {why}");
    }
}

/// The two descriptor sets of this repository: the runway contract (`api/`) and the
/// orchestrator's protos, each with its registry module's path in the package.
fn contracts() -> [(&'static str, &'static [u8]); 2] {
    [
        ("topics.py", keyway::DESCRIPTOR_SET),
        (
            "orchestrator/topics.py",
            keyway::orchestrator::DESCRIPTOR_SET,
        ),
    ]
}

/// What the generators give today: package-relative path → contents. The message classes only
/// with Python (grpcio-tools' protoc), the registries always.
fn generated(python: Option<&Path>) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut protos = Vec::new();
    for (module, set) in contracts() {
        let pool = DescriptorPool::decode(set).expect("the embedded descriptor set decodes");
        let compiled = keyway_codegen::Compiled::from_pool(pool.clone());
        let bindings = compiled
            .topic_bindings(None)
            .unwrap_or_else(|e| panic!("the contract's topic bindings: {e:?}"));
        out.insert(
            module.to_owned(),
            python_registry(&pool, &bindings).into_bytes(),
        );
        for file in pool.files() {
            if !file.name().starts_with("google/") && !protos.contains(&file.name().to_owned()) {
                protos.push(file.name().to_owned());
            }
        }
    }
    let Some(python) = python else {
        return out;
    };
    let scratch = target_dir().join(format!("clients/gen-python-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let gen = scratch.join("out");
    fs::create_dir_all(&gen).unwrap();
    let mut sets = Vec::new();
    for (i, (_, set)) in contracts().iter().enumerate() {
        let path = scratch.join(format!("set-{i}.binpb"));
        fs::write(&path, set).unwrap();
        sets.push(path.display().to_string());
    }
    let mut protoc = Command::new(python);
    protoc
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("--descriptor_set_in={}", sets.join(":")))
        .arg(format!("--python_out={}", gen.display()))
        .arg(format!("--pyi_out={}", gen.display()))
        .args(&protos);
    if let Err(e) = run(&mut protoc) {
        panic!("grpcio-tools' protoc failed: {}", e.unwrap_or_default());
    }
    for proto in &protos {
        let stem = proto.strip_suffix(".proto").unwrap().replace('-', "_");
        for ext in ["_pb2.py", "_pb2.pyi"] {
            let rel = format!("{stem}{ext}");
            let rel = rel.strip_prefix("keyway/").unwrap_or(&rel).to_owned();
            let bytes = fs::read(gen.join(format!("{stem}{ext}"))).unwrap();
            out.insert(rel, bytes);
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    out
}

/// Compare `expected` with the files under `dir`, or write them when blessing; returns the
/// problems.
fn check_files(dir: &Path, expected: &BTreeMap<String, Vec<u8>>, how: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (rel, want) in expected {
        let path = dir.join(rel);
        if fs::read(&path).is_ok_and(|have| have == *want) {
            continue;
        }
        if blessing() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, want).unwrap();
            eprintln!("wrote {}", path.display());
        } else {
            problems.push(format!(
                "{} is stale or missing ({how})",
                path.strip_prefix(workspace()).unwrap_or(&path).display()
            ));
        }
    }
    problems
}

#[test]
fn checked_in_generated_code_is_fresh() {
    let python = python_or_skip("checked_in_generated_code_is_fresh (message classes)");
    let expected = generated(python);
    assert!(expected.contains_key("topics.py"));
    let problems = check_files(&package_dir(), &expected, "regenerate");
    assert!(
        problems.is_empty(),
        "{}\nregenerate with `KEYWAY_BLESS=1 cargo test --test clients_python`",
        problems.join("\n")
    );
}

#[test]
fn the_registry_names_every_topic_key_and_its_message() {
    let (_, set) = contracts()[0];
    let pool = DescriptorPool::decode(set).unwrap();
    let bindings = keyway_codegen::Compiled::from_pool(pool.clone())
        .topic_bindings(None)
        .unwrap();
    let text = python_registry(&pool, &bindings);
    for b in &bindings {
        let constant = b.key.replace('-', "_").to_ascii_uppercase();
        let line = format!(
            "{constant}: Topic[_keyway_runway_messagequeue_pb2.{0}] = Topic(\"{1}\", _keyway_runway_messagequeue_pb2.{0})",
            b.message.name(),
            b.key
        );
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
        assert!(text.contains(&format!(
            "    \"{}\": \"{}\",",
            b.key,
            b.message.full_name()
        )));
    }
    assert_eq!(bindings.len(), 4);
    assert!(text
        .contains("from keyway.runway import messagequeue_pb2 as _keyway_runway_messagequeue_pb2"));
    assert_eq!(text, python_registry(&pool, &bindings), "deterministic");
}

#[test]
fn lua_copies_are_the_originals() {
    let mut expected = BTreeMap::new();
    for dir in ["runtime/lua", "src/stages/lua"] {
        let mut names: Vec<_> = fs::read_dir(workspace().join(dir))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "lua"))
            .collect();
        names.sort();
        for path in names {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            expected.insert(name, fs::read(&path).unwrap());
        }
    }
    assert!(expected.len() >= 9, "the scripts: {:?}", expected.keys());
    let lua = package_dir().join("lua");
    let mut problems = check_files(&lua, &expected, "copy the original");
    for entry in fs::read_dir(&lua).unwrap().filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !expected.contains_key(&name) {
            problems.push(format!(
                "clients/python/src/keyway/lua/{name} has no original"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\ncopy them with `KEYWAY_BLESS=1 cargo test --test clients_python`",
        problems.join("\n")
    );
}

/// Run pytest in the package with `args` and `env`; its exit status and output.
fn pytest(python: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(python)
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(client_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The last line of pytest's output that counts passed tests.
fn summary(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or("")
}

#[test]
fn pytest_passes_on_a_cluster() {
    let Some(python) = python_or_skip("pytest_passes_on_a_cluster") else {
        return;
    };
    let cluster = EmbeddedCluster::shared().expect("a local Redis Cluster starts");
    let node = format!("127.0.0.1:{}", cluster.nodes()[0].port());
    let (ok, text) = pytest(
        python,
        &["tests/test_cluster.py"],
        &[("KEYWAY_TEST_CLUSTER", &node)],
    );
    assert!(ok, "pytest on the cluster failed:\n{text}");
    let summary = summary(&text);
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "the cluster tests ran: {text}"
    );
    eprintln!("pytest on a cluster: {summary}");
}

#[test]
fn pytest_passes() {
    let Some(python) = python_or_skip("pytest_passes") else {
        return;
    };
    let (ok, text) = pytest(python, &[], &[]);
    assert!(ok, "pytest failed:\n{text}");
    let summary = summary(&text);
    assert!(!summary.contains(" failed"), "{text}");
    for skipped in text.lines().filter(|l| l.starts_with("SKIPPED")) {
        eprintln!("pytest: {skipped}");
    }
    eprintln!("pytest: {summary}");
}
