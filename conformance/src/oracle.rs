//! Differential oracles: the official protobuf libraries other languages' clients use, run as
//! long-lived subprocesses speaking one JSON request and one JSON response per line (see
//! `oracles/python/oracle.py`), and a comparison of JSON values that allows exactly the
//! spellings the proto3 JSON mapping allows.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

/// A running oracle process.
pub struct Oracle {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    /// Python's `protobuf` package, loading the descriptor sets at `sets`. Panics, naming what
    /// to install, when it cannot start: a missing oracle is a failed check, not a skipped one.
    pub fn python(sets: &[PathBuf]) -> Oracle {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oracles/python/oracle.py");
        let python = std::env::var("KEYWAY_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        Oracle::spawn(
            &python,
            &script,
            sets,
            "pip install -r conformance/oracles/python/requirements.txt",
        )
    }

    /// `@bufbuild/protobuf` on Node.js, loading the descriptor sets at `sets` (see
    /// [`Oracle::python`] for failures).
    pub fn node(sets: &[PathBuf]) -> Oracle {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oracles/node/oracle.mjs");
        Oracle::spawn(
            "node",
            &script,
            sets,
            "npm ci --prefix conformance/oracles/node",
        )
    }

    fn spawn(program: &str, script: &Path, sets: &[PathBuf], install: &str) -> Oracle {
        let mut child = Command::new(program)
            .arg(script)
            .args(sets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program}: {e}; install the oracle with `{install}`")
            });
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut oracle = Oracle {
            name: program.to_owned(),
            child,
            stdin,
            stdout,
        };
        let version = oracle
            .request(&serde_json::json!({"op": "version"}))
            .unwrap_or_else(|e| {
                panic!("the {program} oracle did not start ({e}); install it with `{install}`")
            });
        oracle.name = version["version"].as_str().unwrap_or(program).to_owned();
        oracle
    }

    /// The oracle's name and library version.
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

/// Whether two protobuf-JSON documents mean the same: same keys and values, numbers equal as
/// doubles (or as floats, for `float` fields written at double precision by one side). The
/// error names the path of the first difference.
pub fn same_json(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let here = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => same_json(p, q, &here)?,
                    (p, q) => return Err(format!("{here}: {p:?} vs {q:?}")),
                }
            }
            Ok(())
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .try_for_each(|(i, (p, q))| same_json(p, q, &format!("{path}[{i}]"))),
        (Value::Number(x), Value::Number(y)) => {
            let (p, q) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            if p == q || (p as f32) == (q as f32) && (p as f32).is_finite() {
                Ok(())
            } else {
                Err(format!("{path}: {x} vs {y}"))
            }
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_value() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":[0.1],"f":0.1}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"x":1.0,"y":[0.1],"f":0.10000000149011612}"#).unwrap();
        assert!(same_json(&a, &b, "").is_ok());
        let c: Value = serde_json::from_str(r#"{"x":2,"y":[0.1],"f":0.1}"#).unwrap();
        assert_eq!(same_json(&a, &c, "").unwrap_err(), ".x: 1 vs 2");
        let d: Value = serde_json::from_str(r#"{"x":1,"y":[0.1]}"#).unwrap();
        assert!(same_json(&a, &d, "").unwrap_err().starts_with(".f:"));
        let e: Value = serde_json::from_str(r#"{"x":1,"y":[0.2],"f":0.1}"#).unwrap();
        assert!(same_json(&a, &e, "").unwrap_err().starts_with(".y[0]:"));
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"f"), "Zg==");
    }
}
