//! Wall time per invocation of `keyway contract check` and `keyway contract breaking` on a
//! generated tree of 200 `.proto` files, against `buf breaking` on the same trees, measured in
//! the same run, interleaved round by round.
//!
//! Run: `cargo bench -p keyway --bench contract`. buf comes from the npm registry:
//! `npm install --prefix target/buf @bufbuild/buf` (or set `KEYWAY_BUF` to a buf binary); without
//! it the buf rows say "skipped". `KEYWAY_BENCH_ROUNDS` sets the rounds (default 9).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FILES: usize = 200;

fn write_tree(root: &Path, changed: bool) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("acme/queue")).unwrap();
    std::fs::write(
        root.join("acme/queue/options.proto"),
        "syntax = \"proto3\";\npackage acme.queue;\nimport \"google/protobuf/descriptor.proto\";\n\
         extend google.protobuf.MessageOptions {\n  repeated string topic_keys = 50001;\n}\n",
    )
    .unwrap();
    for i in 0..FILES {
        let dir = root.join(format!("acme/svc{i}/v1"));
        std::fs::create_dir_all(&dir).unwrap();
        // A few files change between the trees: a renamed field, a new enum value.
        let field = if changed && i % 50 == 0 {
            "amount"
        } else {
            "quantity"
        };
        let extra = if changed && i % 40 == 1 {
            "\n  STATE_ARCHIVED = 3;"
        } else {
            ""
        };
        let text = format!(
            "syntax = \"proto3\";\n\npackage acme.svc{i}.v1;\n\nimport \"acme/queue/options.proto\";\n\n\
             // Event {i}.\nmessage Event{i} {{\n  option (acme.queue.topic_keys) = \"event-{i}\";\n\n  \
             string id = 1;\n  int32 {field} = 2;\n  int64 total = 3;\n  State state = 4;\n  \
             repeated Item items = 5;\n  map<string, string> labels = 6;\n  optional string note = 7;\n}}\n\n\
             // An item.\nmessage Item {{\n  string sku = 1;\n  uint32 count = 2;\n}}\n\n\
             // A state.\nenum State {{\n  STATE_UNSPECIFIED = 0;\n  STATE_OPEN = 1;\n  STATE_CLOSED = 2;{extra}\n}}\n"
        );
        std::fs::write(dir.join("events.proto"), text).unwrap();
    }
}

fn buf() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEYWAY_BUF") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/buf/node_modules/.bin/buf");
    if local.exists() {
        return Some(local);
    }
    let on_path = Command::new("buf").arg("--version").output().ok()?;
    on_path.status.success().then(|| PathBuf::from("buf"))
}

fn time(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = cmd.output().expect("command runs");
    let took = started.elapsed();
    assert!(
        out.status.code().is_some_and(|c| c <= 1 || c == 100),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("KEYWAY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let work = std::env::temp_dir().join(format!("keyway-contract-bench-{}", std::process::id()));
    let (old, new) = (work.join("old"), work.join("new"));
    write_tree(&old, false);
    write_tree(&new, true);
    let keyway = env!("CARGO_BIN_EXE_keyway");
    let buf = buf();

    let mut check = Vec::new();
    let mut breaking = Vec::new();
    let mut buf_breaking = Vec::new();
    for _ in 0..rounds {
        check.push(time(
            Command::new(keyway)
                .args(["contract", "check", "-I"])
                .arg(&new),
        ));
        breaking.push(time(
            Command::new(keyway)
                .args(["contract", "breaking", "-I"])
                .arg(&new)
                .arg("--against")
                .arg(&old),
        ));
        if let Some(buf) = &buf {
            buf_breaking.push(time(
                Command::new(buf)
                    .arg("breaking")
                    .arg(&new)
                    .arg("--against")
                    .arg(&old),
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);

    println!(
        "tree: {FILES} proto files (+ options), {rounds} rounds, median wall time per invocation\n"
    );
    let buf_ms = (!buf_breaking.is_empty()).then(|| median(buf_breaking).as_secs_f64() * 1000.0);
    let row = |name: &str, ms: f64| match buf_ms {
        Some(b) => println!("{name:<34} {ms:>9.1} ms   {:>5.1}× faster than buf", b / ms),
        None => println!("{name:<34} {ms:>9.1} ms"),
    };
    row(
        "keyway contract check",
        median(check).as_secs_f64() * 1000.0,
    );
    row(
        "keyway contract breaking",
        median(breaking).as_secs_f64() * 1000.0,
    );
    match buf_ms {
        Some(ms) => println!("{:<34} {ms:>9.1} ms   (baseline)", "buf breaking"),
        None => println!(
            "{:<34} skipped: buf not found (npm install --prefix target/buf @bufbuild/buf)",
            "buf breaking"
        ),
    }
}
