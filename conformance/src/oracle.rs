//! Differential oracles: the official protobuf libraries other languages' clients use, run as
//! long-lived subprocesses speaking one JSON request and one JSON response per line (see
//! `oracles/python/oracle.py`), and a comparison of JSON documents by the message's field types
//! ([`same_json`]).
//!
//! Each oracle sets itself up on first use, inside the project's own directories, and reuses
//! that later:
//! - Python: a virtualenv at `<target>/oracles/python` (`<target>` is `$CARGO_TARGET_DIR`, or
//!   `target/` of the workspace), made with `python3 -m venv` and given the pinned
//!   `conformance/oracles/python/requirements.txt`. A stamp in it holds the requirements it was
//!   made from, so a changed pin makes a new one; it is built in a sibling directory and renamed
//!   into place, so a half-built one is never used. `KEYWAY_PYTHON=/path/to/python` uses that
//!   interpreter as it is instead (it must already have the pinned protobuf).
//! - Node.js: `npm ci --prefix conformance/oracles/node` when `node_modules` is missing or was
//!   installed from another `package-lock.json` (a stamp in `node_modules` holds the lockfile it
//!   was installed from). `KEYWAY_NODE=/path/to/node` picks the interpreter.
//! - A process sets each oracle up at most once and remembers the outcome: the program to run,
//!   or one line saying what is missing and how to install it.
//! - [`Oracle::start`] tells an oracle that could not be set up
//!   ([`StartError::is_unavailable`]) from one that was set up and then failed to start; tests
//!   skip on the first (see [`Oracle::start_or_skip`]) and fail on the second.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

mod compare;
mod setup;

pub use compare::{pool, same_json};
pub use setup::setup;

/// Which oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Python's official `protobuf` package.
    Python,
    /// `@bufbuild/protobuf` on Node.js.
    Node,
}

impl Kind {
    /// Both oracles.
    pub const ALL: [Kind; 2] = [Kind::Python, Kind::Node];

    /// `python` or `node`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Python => "python",
            Kind::Node => "node",
        }
    }

    fn script(self) -> PathBuf {
        setup::oracles_dir().join(match self {
            Kind::Python => "python/oracle.py",
            Kind::Node => "node/oracle.mjs",
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an oracle did not start.
#[derive(Debug, Clone)]
pub struct StartError {
    kind: Kind,
    reason: String,
    unavailable: bool,
}

impl StartError {
    /// Whether the oracle could not be set up (its interpreter or library is missing and could
    /// not be installed), as opposed to set up and then failing to start.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    /// The oracle.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unavailable {
            write!(f, "{} oracle unavailable: {}", self.kind, self.reason)
        } else {
            write!(f, "{} oracle did not start: {}", self.kind, self.reason)
        }
    }
}

impl std::error::Error for StartError {}

/// A running oracle process.
pub struct Oracle {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    /// Set `kind` up if this process has not yet, and start it with the descriptor sets of the
    /// contract and of the kitchen-sink fixture loaded.
    pub fn start(kind: Kind) -> Result<Oracle, StartError> {
        let program = setup(kind).map_err(|reason| StartError {
            kind,
            reason: reason.to_owned(),
            unavailable: true,
        })?;
        let failed = |reason: String| StartError {
            kind,
            reason,
            unavailable: false,
        };
        let sets = setup::descriptor_sets().map_err(|e| failed(e.to_owned()))?;
        Oracle::spawn(program, &kind.script(), sets).map_err(failed)
    }

    /// [`Oracle::start`] for tests: `None`, after writing
    /// `skipped: <oracle> oracle unavailable: <reason>` to stderr, when the oracle could not be
    /// set up. Panics when it was set up and did not start: a broken oracle is a failure.
    ///
    /// The line goes to the process's stderr itself, past the test harness's capture, so a
    /// skip shows in the test output although the test passes.
    pub fn start_or_skip(kind: Kind) -> Option<Oracle> {
        match Oracle::start(kind) {
            Ok(oracle) => Some(oracle),
            Err(e) if e.is_unavailable() => {
                let _ = writeln!(std::io::stderr(), "skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn spawn(program: &Path, script: &Path, sets: &[PathBuf]) -> Result<Oracle, String> {
        let mut child = Command::new(program)
            .arg(script)
            .args(sets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut oracle = Oracle {
            name: program.display().to_string(),
            child,
            stdin,
            stdout,
        };
        let version = oracle
            .request(&serde_json::json!({"op": "version"}))
            .map_err(|e| format!("{} {}: {e}", program.display(), script.display()))?;
        if let Some(name) = version["version"].as_str() {
            oracle.name = name.to_owned();
        }
        Ok(oracle)
    }

    /// The oracle's name and library version, such as `python protobuf 7.36.2`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Send one request; the response, or the oracle's error.
    pub fn request(&mut self, request: &Value) -> Result<Value, String> {
        writeln!(self.stdin, "{request}").map_err(|e| format!("oracle stdin: {e}"))?;
        self.stdin
            .flush()
            .map_err(|e| format!("oracle stdin: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("oracle stdout: {e}"))?;
        if line.is_empty() {
            return Err("the oracle exited".into());
        }
        let response: Value =
            serde_json::from_str(&line).map_err(|e| format!("oracle reply {line:?}: {e}"))?;
        if response["ok"] == Value::Bool(true) {
            Ok(response)
        } else {
            Err(response["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned())
        }
    }

    /// Parse `json` as `type_name` and write it back.
    pub fn json_roundtrip(&mut self, type_name: &str, json: &str) -> Result<String, String> {
        let r = self.request(
            &serde_json::json!({"op": "json_roundtrip", "type": type_name, "json": json}),
        )?;
        Ok(r["json"].as_str().unwrap_or_default().to_owned())
    }

    /// Decode protobuf binary as `type_name` and write its JSON.
    pub fn binary_to_json(&mut self, type_name: &str, binary: &[u8]) -> Result<String, String> {
        let r = self.request(&serde_json::json!({
            "op": "binary_to_json",
            "type": type_name,
            "binary": base64_encode(binary),
        }))?;
        Ok(r["json"].as_str().unwrap_or_default().to_owned())
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"f"), "Zg==");
    }

    #[test]
    fn start_errors_say_which_kind_of_failure() {
        let unavailable = StartError {
            kind: Kind::Python,
            reason: "python3 is not on PATH".into(),
            unavailable: true,
        };
        assert!(unavailable.is_unavailable());
        assert_eq!(
            unavailable.to_string(),
            "python oracle unavailable: python3 is not on PATH"
        );
        let failed = StartError {
            kind: Kind::Node,
            reason: "the oracle exited".into(),
            unavailable: false,
        };
        assert!(!failed.is_unavailable());
        assert_eq!(
            failed.to_string(),
            "node oracle did not start: the oracle exited"
        );
    }
}
