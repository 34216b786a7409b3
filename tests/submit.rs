//! Submitting work as a user does: `keyway submit` and `keyway status` against `keyway run all`
//! with the git merger, on a real repository and a real redis-server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyway::merge_service::uri::ChangeUri;
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Sam Submitter")
        .env("GIT_AUTHOR_EMAIL", "sam@example.com")
        .env("GIT_COMMITTER_NAME", "Sam Submitter")
        .env("GIT_COMMITTER_EMAIL", "sam@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Setup {
    root: PathBuf,
    origin: PathBuf,
    config: PathBuf,
    url: String,
    _server: EmbeddedRedis,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A repository with a change branch, a redis-server, and a config with the git merger on
/// queue `pay`. Returns the change's URI too.
fn setup(name: &str) -> (Setup, String) {
    let root = std::env::temp_dir().join(format!("keyway-submit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    git(&root, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
    git(&root, &["init", "-q", "-b", "main", "work"]);
    let work = root.join("work");
    let origin = root.join("origin.git");
    git(
        &work,
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    std::fs::write(work.join("a.txt"), "a\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "a"]);
    git(&work, &["push", "-q", "origin", "main"]);
    git(&work, &["checkout", "-qb", "feature"]);
    std::fs::write(work.join("b.txt"), "b\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "b"]);
    git(&work, &["push", "-q", "origin", "feature"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    let uri = ChangeUri::file(&origin, "refs/heads/feature", &sha);

    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/keyway.toml")).unwrap();
    let config = root.join("keyway.toml");
    std::fs::write(
        &config,
        format!(
            "{example}\n[runway]\nmirror_dir = \"{}\"\n\n[runway.queues.pay]\nrepository = \"{}\"\nbranch = \"main\"\ndefault_strategy = \"squash-rebase\"\n",
            root.join("mirrors").display(),
            origin.display()
        ),
    )
    .unwrap();
    let server = EmbeddedRedis::start(EmbeddedOptions::default()).unwrap();
    let url = server.url();
    (
        Setup {
            root,
            origin,
            config,
            url,
            _server: server,
        },
        uri,
    )
}

fn keyway(s: &Setup, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(args)
        .env("REDIS_URL", &s.url)
        .env("KEYWAY_CONFIG", &s.config)
        .output()
        .unwrap()
}

fn run_all(s: &Setup) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["run", "all"])
        .env("REDIS_URL", &s.url)
        .env("KEYWAY_CONFIG", &s.config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_submitted_batch_lands_and_its_status_says_so() {
    let (s, uri) = setup("lands");
    let mut loop_ = run_all(&s);
    let out = keyway(&s, &["submit", "--queue", "pay", &uri]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(batch, "pay/batch/1");

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = keyway(&s, &["status", &batch, "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("\"BATCH_STATE_SUCCEEDED\"") && text.contains("\"REQUEST_STATE_LANDED\"") {
            break text;
        }
        assert!(!text.contains("BATCH_STATE_FAILED"), "{text}");
        assert!(Instant::now() < deadline, "the batch did not land: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = loop_.kill();
    let _ = loop_.wait();
    // The revision the status names is the target's new tip: a squash of the change.
    let tip = git(&s.origin, &["rev-parse", "main"]);
    assert!(
        status.contains(&format!("\"revisions\":[\"{tip}\"]")),
        "{status}"
    );
    assert_eq!(
        git(&s.origin, &["log", "-1", "--format=%s|%an", "main"]),
        "squash: pay/1 (feature)|Sam Submitter"
    );
    let human = keyway(&s, &["status", &batch]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.starts_with("pay/batch/1  SUCCEEDED"), "{human}");
    assert!(
        human.contains(&format!("pay/1            LANDED    {tip}")),
        "{human}"
    );
}

#[test]
fn bad_submissions_are_refused_before_anything_is_written() {
    let (s, uri) = setup("refused");
    for (args, says) in [
        (
            vec!["submit", "--queue", "pay", "file:///x/main/abc"],
            "request 1, URI 1: file:///x/main/abc: ",
        ),
        (
            vec!["submit", "--queue", "p/q", &uri],
            "queue \"p/q\": expected",
        ),
        (
            vec![
                "submit",
                "--queue",
                "pay",
                "--strategy",
                "promote",
                &uri,
                &uri,
            ],
            "request 1: promote needs a batch of exactly one request with one URI",
        ),
    ] {
        let out = keyway(&s, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let file = s.root.join("batch.toml");
    std::fs::write(
        &file,
        format!("[[requests]]\nuris = [\"{uri}\"]\nstrategy = \"sideways\"\n"),
    )
    .unwrap();
    let out = keyway(
        &s,
        &["submit", "--queue", "pay", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("requests[0].strategy: \"sideways\" is not one of"),
        "{stderr}"
    );
    // Nothing was written: the first real batch is still number 1.
    std::fs::write(&file, format!("[[requests]]\nuris = [\"{uri}\"]\nstrategy = \"merge\"\n\n[[requests]]\nuris = [\"{uri}\"]\n")).unwrap();
    let out = keyway(
        &s,
        &["submit", "--queue", "pay", "--file", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pay/batch/1");
    let status = keyway(&s, &["status", "pay/batch/1"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("pay/1 ") && status.contains("pay/2 "),
        "{status}"
    );
    // Handing a recorded batch over again: accepted, and not merged twice (same intent id).
    let out = keyway(&s, &["submit", "--resume", "pay/batch/1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pay/batch/1");
    let out = keyway(&s, &["submit", "--resume", "pay/batch/9"]);
    assert_eq!(out.status.code(), Some(1));
    let out = keyway(&s, &["status", "pay/batch/9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no batch \"pay/batch/9\""));
}
