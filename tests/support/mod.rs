//! Running `keyway` processes as an operator would and reading what they log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keyway::stages::app;
use keyway_runtime::wkt::{value::Kind, Struct, Value};

/// A config file with every stage topic on its own stream, the fake merger and `extra` TOML
/// (a `[redis]` table, say), written once per name per test process.
pub(crate) fn config_file(name: &str, extra: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("keyway-{name}-{}.toml", std::process::id()));
    let mut text = format!("{extra}\n[runway]\nmerger = \"fake\"\n\n[topics]\n");
    for (key, stream) in app::registry().iter() {
        text.push_str(&format!("{key} = \"{stream}\"\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A `keyway` process whose standard error is read line by line as it comes.
pub(crate) struct Keyway {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Keyway {
    /// Start `keyway <args>` with `env` added (and `REDIS_URL`, `KEYWAY_LOG` and `RUST_LOG`
    /// from the test's own environment removed).
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Keyway {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyway"));
        command
            .args(args)
            .env_remove("REDIS_URL")
            .env_remove("KEYWAY_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("keyway starts");
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Keyway {
            child,
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    fn receive(&mut self, wait: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(wait).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The first line from now on that satisfies `pred`, waiting up to `within`.
    pub(crate) fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receive(left.min(Duration::from_millis(200))) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None if Instant::now() >= deadline => {
                    panic!(
                        "no line says {what} within {within:?}; keyway said:\n{}",
                        self.seen.join("\n")
                    )
                }
                None => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        // Drain what it wrote before it exited.
                        while self.receive(Duration::from_millis(200)).is_some() {}
                        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
                            return line.clone();
                        }
                        panic!(
                            "keyway exited with {status} before a line said {what}; it said:\n{}",
                            self.seen.join("\n")
                        );
                    }
                }
            }
        }
    }

    /// Wait for it to exit on its own, up to `within`.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while self.receive(Duration::from_millis(200)).is_some() {}
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "keyway did not exit within {within:?}; it said:\n{}",
                    self.seen.join("\n")
                );
            }
            let _ = self.receive(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        self.wait_exit(Duration::from_secs(20))
    }

    /// What it wrote to standard output, once it has exited.
    pub(crate) fn stdout(&mut self) -> String {
        self.stdout
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Every line read so far.
    pub(crate) fn lines(&self) -> &[String] {
        &self.seen
    }
}

impl Drop for Keyway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A JSON log line as an object; panics naming the line when it is not one.
pub(crate) fn json(line: &str) -> Struct {
    keyway_runtime::json::from_str::<Struct>(line)
        .unwrap_or_else(|e| panic!("not a JSON object: {e}: {line}"))
}

/// The value at `path` (object keys) in `object`.
pub(crate) fn at<'a>(object: &'a Struct, path: &[&str]) -> Option<&'a Kind> {
    let (first, rest) = path.split_first()?;
    let kind = object
        .fields
        .get(*first)
        .and_then(|v: &Value| v.kind.as_ref())?;
    match (rest.is_empty(), kind) {
        (true, kind) => Some(kind),
        (false, Kind::StructValue(inner)) => at(inner, rest),
        _ => None,
    }
}

/// The string at `path`, if there is one.
pub(crate) fn text<'a>(object: &'a Struct, path: &[&str]) -> Option<&'a str> {
    match at(object, path)? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

/// The number at `path`, if there is one.
pub(crate) fn number(object: &Struct, path: &[&str]) -> Option<f64> {
    match at(object, path)? {
        Kind::NumberValue(n) => Some(*n),
        _ => None,
    }
}

/// An HTTP/1.1 exchange: the status, the headers (names lowercased) and the body.
pub(crate) fn http(addr: &str, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// A loopback port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
