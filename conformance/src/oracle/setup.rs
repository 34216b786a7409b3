//! Setting the oracles up: their interpreters found, their libraries installed into the
//! project's own directories, once per process (see the module docs of [`super`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::Kind;

const PYTHON_INSTALL: &str =
    "Debian/Ubuntu: `apt-get install python3 python3-venv`, macOS: `brew install python`";
const NODE_INSTALL: &str =
    "Debian/Ubuntu: `apt-get install nodejs npm`, macOS: `brew install node`";
const REQUIREMENTS: &str = "conformance/oracles/python/requirements.txt";
/// In the virtualenv: the requirements it was made from.
const VENV_STAMP: &str = ".keyway-requirements-stamp";
/// In `node_modules`: the lockfile it was installed from.
const NODE_STAMP: &str = ".keyway-lock-stamp";

/// Set `kind` up if this process has not yet: the interpreter to run its script with, or one
/// line naming what is missing and how to install it. The outcome is kept for the process.
pub fn setup(kind: Kind) -> Result<&'static Path, &'static str> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let outcome = match kind {
        Kind::Python => PYTHON.get_or_init(python),
        Kind::Node => NODE.get_or_init(node),
    };
    outcome.as_deref().map_err(String::as_str)
}

/// `conformance/oracles`.
pub(super) fn oracles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oracles")
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

/// The descriptor sets every oracle loads (the contract's and the kitchen-sink fixture's),
/// written once per process under `<target>/oracles/descriptor-sets`. Each file is named by a
/// hash of its contents and appears whole (written aside, then renamed), so a reader never sees
/// a partial or another build's set.
pub(super) fn descriptor_sets() -> Result<&'static [PathBuf], &'static str> {
    static SETS: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();
    SETS.get_or_init(|| {
        let dir = target_dir().join("oracles").join("descriptor-sets");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        [
            ("contract", keyway::DESCRIPTOR_SET),
            ("kitchen-sink", crate::kitchen_sink::FILE_DESCRIPTOR_SET),
        ]
        .into_iter()
        .map(|(name, bytes)| write_whole(&dir, name, bytes))
        .collect()
    })
    .as_deref()
    .map_err(String::as_str)
}

fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = dir.join(format!("{name}-{:016x}.binpb", fnv1a(bytes)));
    if fs::read(&path).is_ok_and(|existing| existing == bytes) {
        return Ok(path);
    }
    let partial = dir.join(format!("{name}.partial-{}", std::process::id()));
    fs::write(&partial, bytes)
        .and_then(|()| fs::rename(&partial, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Why a command did not succeed.
enum RunError {
    /// The program is not there.
    Missing,
    /// It ran and failed: its output, or how it ended.
    Failed(String),
}

/// Run `command` to the end with its output captured: its standard output.
fn run(command: &mut Command) -> Result<String, RunError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RunError::Missing,
            _ => RunError::Failed(e.to_string()),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let text = stdout + &String::from_utf8_lossy(&output.stderr);
    Err(RunError::Failed(if text.trim().is_empty() {
        format!("it {}", output.status)
    } else {
        text
    }))
}

/// The gist of a failed command's output, on one line: its first two error lines, or else its
/// first line.
fn summary(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.to_ascii_lowercase().contains("error") && !l.contains("complete log"))
        .take(2)
        .collect();
    let gist = if errors.is_empty() {
        lines.first().copied().unwrap_or("no output").to_owned()
    } else {
        errors.join("; ")
    };
    match gist.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &gist[..cut]),
        None => gist,
    }
}

/// The version `requirements` pins `package` to with `==`.
fn pinned<'a>(requirements: &'a str, package: &str) -> Option<&'a str> {
    requirements.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default().trim();
        let (name, version) = line.split_once("==")?;
        (name.trim() == package).then(|| version.trim())
    })
}

/// The protobuf version `python` imports.
fn protobuf_version(python: &Path) -> Result<String, RunError> {
    run(Command::new(python).args([
        "-c",
        "from google.protobuf import __version__; print(__version__)",
    ]))
    .map(|out| out.trim().to_owned())
}

/// Whether `python` has protobuf at the pinned version (any version when nothing is pinned).
fn check_python(python: &Path, pin: Option<&str>) -> Result<(), RunError> {
    let version = protobuf_version(python)?;
    match pin {
        Some(pin) if version != pin => Err(RunError::Failed(format!(
            "it has protobuf {version}, {REQUIREMENTS} pins {pin}"
        ))),
        _ => Ok(()),
    }
}

/// [`check_python`]'s failure, in words.
fn python_problem(e: RunError) -> String {
    match e {
        RunError::Missing => "no such program".to_owned(),
        RunError::Failed(out) if out.contains("google.protobuf") || out.contains("No module") => {
            format!("it cannot import google.protobuf ({})", summary(&out))
        }
        RunError::Failed(out) => summary(&out),
    }
}

fn python() -> Result<PathBuf, String> {
    let requirements_path = oracles_dir().join("python").join("requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .map_err(|e| format!("cannot read {REQUIREMENTS}: {e}"))?;
    let pin = pinned(&requirements, "protobuf");
    if let Some(python) = std::env::var_os("KEYWAY_PYTHON") {
        let python = PathBuf::from(python);
        let shown = python.display().to_string();
        return match check_python(&python, pin) {
            Ok(()) => Ok(python),
            Err(RunError::Missing) => Err(format!(
                "KEYWAY_PYTHON={shown}: no such program; point it at a python3 that has the \
                 pinned protobuf, or unset it to let the tests make a virtualenv"
            )),
            Err(e) => Err(format!(
                "KEYWAY_PYTHON={shown}: {}; give it the pinned protobuf (`{shown} -m pip install \
                 -r {REQUIREMENTS}`), or unset KEYWAY_PYTHON to let the tests make a virtualenv",
                python_problem(e)
            )),
        };
    }
    let venv = target_dir().join("oracles").join("python");
    let python = venv_python(&venv);
    if venv_is_complete(&venv, &requirements) {
        if check_python(&python, pin).is_ok() {
            return Ok(python);
        }
        // Complete but broken, as when its base interpreter has gone: make it again.
        discard(&venv).map_err(|e| format!("cannot remove {}: {e}", venv.display()))?;
    }
    make_venv(&venv, &requirements, &requirements_path)?;
    check_python(&python, pin).map_err(|e| {
        format!(
            "the virtualenv at {} does not work: {}",
            venv.display(),
            python_problem(e)
        )
    })?;
    Ok(python)
}

fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

fn venv_is_complete(venv: &Path, requirements: &str) -> bool {
    fs::read_to_string(venv.join(VENV_STAMP)).is_ok_and(|stamp| stamp == requirements)
}

/// Make the virtualenv `venv` in a sibling directory, then rename it into place.
fn make_venv(venv: &Path, requirements: &str, requirements_path: &Path) -> Result<(), String> {
    let parent = venv.parent().expect("the virtualenv's path has a parent");
    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = parent.join(format!("python.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let made = fill_venv(&staging, requirements, requirements_path).and_then(|()| {
        publish(&staging, venv, |dir| venv_is_complete(dir, requirements))
            .map_err(|e| format!("cannot move the virtualenv to {}: {e}", venv.display()))
    });
    // Gone after the rename; what a failure left behind otherwise.
    let _ = fs::remove_dir_all(&staging);
    made
}

fn fill_venv(staging: &Path, requirements: &str, requirements_path: &Path) -> Result<(), String> {
    match run(Command::new("python3").args(["-m", "venv"]).arg(staging)) {
        Ok(_) => {}
        Err(RunError::Missing) => {
            return Err(format!(
                "python3 is not on PATH; install it ({PYTHON_INSTALL}), or set KEYWAY_PYTHON to \
                 an interpreter that has the pinned protobuf"
            ))
        }
        Err(RunError::Failed(out))
            if out.contains("ensurepip") || out.contains("No module named venv") =>
        {
            return Err(
                "python3 cannot make a virtualenv: its venv/ensurepip module is missing; \
                 install it with `apt-get install python3-venv`"
                    .to_owned(),
            )
        }
        Err(RunError::Failed(out)) => {
            return Err(format!("`python3 -m venv` failed: {}", summary(&out)))
        }
    }
    let pip = run(Command::new(venv_python(staging))
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-r",
        ])
        .arg(requirements_path));
    match pip {
        Ok(_) => {}
        Err(RunError::Missing) => {
            return Err(format!(
                "`python3 -m venv` made no interpreter at {}",
                venv_python(staging).display()
            ))
        }
        Err(RunError::Failed(out)) => {
            return Err(format!(
                "`pip install -r {REQUIREMENTS}` into the virtualenv failed: {}",
                summary(&out)
            ))
        }
    }
    let stamp = staging.join(VENV_STAMP);
    fs::write(&stamp, requirements).map_err(|e| format!("cannot write {}: {e}", stamp.display()))
}

/// Rename the directory `staging` to `dest`, replacing a `dest` that is not `complete`. When
/// another process has put a complete one there first, that one stays (and `staging` is left
/// for the caller to remove).
fn publish(staging: &Path, dest: &Path, complete: impl Fn(&Path) -> bool) -> io::Result<()> {
    loop {
        match fs::rename(staging, dest) {
            Ok(()) => return Ok(()),
            Err(_) if complete(dest) => return Ok(()),
            Err(e) if !dest.exists() => return Err(e),
            Err(_) => discard(dest)?,
        }
    }
}

/// Remove the directory `dir`, first renaming it aside so that nobody sees it half removed.
fn discard(dir: &Path) -> io::Result<()> {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".stale-{}", std::process::id()));
    match fs::rename(dir, &aside) {
        Ok(()) => fs::remove_dir_all(&aside),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn node() -> Result<PathBuf, String> {
    let overridden = std::env::var_os("KEYWAY_NODE");
    let node = PathBuf::from(overridden.clone().unwrap_or_else(|| "node".into()));
    match run(Command::new(&node).arg("--version")) {
        Ok(_) => {}
        Err(RunError::Missing) if overridden.is_some() => {
            return Err(format!(
                "KEYWAY_NODE={}: no such program; point it at a Node.js binary, or unset it to \
                 use `node` from PATH",
                node.display()
            ))
        }
        Err(RunError::Missing) => {
            return Err(format!("node is not on PATH; install it ({NODE_INSTALL})"))
        }
        Err(RunError::Failed(out)) => {
            return Err(format!(
                "`{} --version` failed: {}",
                node.display(),
                summary(&out)
            ))
        }
    }
    let dir = oracles_dir().join("node");
    let lockfile = fs::read_to_string(dir.join("package-lock.json"))
        .map_err(|e| format!("cannot read conformance/oracles/node/package-lock.json: {e}"))?;
    let stamp = dir.join("node_modules").join(NODE_STAMP);
    if fs::read_to_string(&stamp).is_ok_and(|installed| installed == lockfile) {
        return Ok(node);
    }
    // `npm ci` starts by removing node_modules, stamp included: the stamp, written last, marks
    // a complete install.
    let npm = run(Command::new("npm")
        .arg("ci")
        .arg("--prefix")
        .arg(&dir)
        .args(["--no-audit", "--no-fund"]));
    match npm {
        Ok(_) => {}
        Err(RunError::Missing) => {
            return Err(format!("npm is not on PATH; install it ({NODE_INSTALL})"))
        }
        Err(RunError::Failed(out)) => {
            return Err(format!(
                "`npm ci --prefix conformance/oracles/node` failed: {}",
                summary(&out)
            ))
        }
    }
    fs::write(&stamp, &lockfile).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_from_requirements() {
        let requirements = "# the oracle\nprotobuf==7.36.2  # pinned\nother>=1\n";
        assert_eq!(pinned(requirements, "protobuf"), Some("7.36.2"));
        assert_eq!(pinned(requirements, "other"), None);
        assert_eq!(pinned("", "protobuf"), None);
    }

    #[test]
    fn summaries_keep_the_error_lines() {
        let pip = "Looking in links: /x\nERROR: Could not find a version that satisfies the \
                   requirement protobuf==0\nERROR: No matching distribution found for protobuf==0\n";
        assert_eq!(
            summary(pip),
            "ERROR: Could not find a version that satisfies the requirement protobuf==0; \
             ERROR: No matching distribution found for protobuf==0"
        );
        let npm = "npm error code ENOTFOUND\nnpm error A complete log of this run can be found \
                   in: /x.log\n";
        assert_eq!(summary(npm), "npm error code ENOTFOUND");
        assert_eq!(summary("\n  just this\nand that\n"), "just this");
        assert_eq!(summary(&"x".repeat(400)).chars().count(), 301);
    }

    #[test]
    fn a_stale_directory_is_replaced_and_a_complete_one_kept() {
        let root = std::env::temp_dir().join(format!("keyway-publish-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (staging, dest) = (root.join("staging"), root.join("dest"));
        let make = |dir: &Path, stamp: &str| {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join("stamp"), stamp).unwrap();
        };
        let stamp_of = |dir: &Path| fs::read_to_string(dir.join("stamp")).unwrap();
        let fresh = |dir: &Path| fs::read_to_string(dir.join("stamp")).is_ok_and(|s| s == "new");

        make(&dest, "old");
        make(&staging, "new");
        publish(&staging, &dest, fresh).unwrap();
        assert_eq!(stamp_of(&dest), "new");
        assert!(!staging.exists());

        fs::write(dest.join("marker"), "").unwrap();
        make(&staging, "new");
        publish(&staging, &dest, fresh).unwrap();
        assert!(dest.join("marker").exists(), "a complete one stays");
        fs::remove_dir_all(&root).unwrap();
    }
}
