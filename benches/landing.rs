//! Landings per second of REBASE changes (3 commits each) onto a repository of 20,000 files:
//! Runway's git merger (object database only, compare-and-swap push) against the worktree
//! approach (a checked-out clone: fetch, `reset --hard`, `cherry-pick`, `push`), in the same run,
//! interleaved in rounds on two identical copies of the repository.
//!
//! Run: `cargo bench -p keyway --bench landing`. `KEYWAY_BENCH_CHANGES` sets the changes
//! (default 200), `KEYWAY_BENCH_ROUNDS` the rounds they are split into (default 10).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyway::base::change::Change;
use keyway::base::mergestrategy::Strategy;
use keyway::merge_service::uri::ChangeUri;
use keyway::merge_service::{GitMerger, GitQueue, Identity, Merger, Verdict};
use keyway::runway::messagequeue::{MergeRequest, MergeStep};

const FILES: usize = 20_000;

fn env_var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare repository with `FILES` files on `main` and `changes` branches `c<i>` of three
/// commits each off the first commit, written with one `git fast-import`.
fn build(dir: &Path, changes: usize) {
    git(
        dir.parent().unwrap(),
        &["init", "-q", "--bare", "-b", "main", dir.to_str().unwrap()],
    );
    let mut stream = Vec::new();
    let when = "1700000000 +0000";
    writeln!(
        stream,
        "commit refs/heads/main\nmark :1\ncommitter Bench <bench@example.com> {when}\ndata 4\nbase"
    )
    .unwrap();
    for f in 0..FILES {
        let body = format!("file {f}\n");
        writeln!(
            stream,
            "M 100644 inline src/d{:03}/f{f}.txt\ndata {}\n{body}",
            f / 100,
            body.len()
        )
        .unwrap();
    }
    let mut mark = 2;
    for c in 0..changes {
        let mut parent = ":1".to_owned();
        for k in 0..3 {
            let body = format!("change {c} part {k}\n");
            let message = format!("change {c}.{k}");
            writeln!(
                stream,
                "commit refs/heads/c{c}\nmark :{mark}\nauthor Dev <dev@example.com> {when}\ncommitter Dev <dev@example.com> {when}\ndata {}\n{message}\nfrom {parent}\nM 100644 inline changes/c{c}/p{k}.txt\ndata {}\n{body}",
                message.len(),
                body.len()
            )
            .unwrap();
            parent = format!(":{mark}");
            mark += 1;
        }
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .env("GIT_DIR", dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success());
}

fn copy(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The worktree approach for one change: what a checkout-based merger does.
fn land_in_worktree(work: &Path, change: &str, base: &str) {
    git(work, &["fetch", "-q", "origin", "main", change]);
    git(work, &["reset", "-q", "--hard", "origin/main"]);
    let range = format!("{base}..origin/{change}");
    git(work, &["cherry-pick", "--allow-empty", &range]);
    git(work, &["push", "-q", "origin", "HEAD:main"]);
}

fn stats(per_second: &mut [f64]) -> (f64, f64, f64) {
    per_second.sort_by(f64::total_cmp);
    (
        per_second[0],
        per_second[per_second.len() / 2],
        per_second[per_second.len() - 1],
    )
}

fn main() {
    let changes = env_var("KEYWAY_BENCH_CHANGES", 200);
    let rounds = env_var("KEYWAY_BENCH_ROUNDS", 10).clamp(1, changes);
    let root = std::env::temp_dir().join(format!("keyway-bench-landing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let t = Instant::now();
    let template = root.join("template.git");
    build(&template, changes);
    let ours = root.join("ours.git");
    let theirs = root.join("theirs.git");
    copy(&template, &ours);
    copy(&template, &theirs);
    let base = git(&template, &["rev-parse", "main"]);
    // The worktree side's checkout is set up once, outside the timing.
    git(&root, &["clone", "-q", theirs.to_str().unwrap(), "work"]);
    let work = root.join("work");
    println!(
        "setup: {FILES} files, {changes} changes of 3 commits, {:.1} s; {}",
        t.elapsed().as_secs_f64(),
        git(&root, &["--version"])
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let queue = GitQueue {
        repository: ours.display().to_string(),
        branch: "main".into(),
        default_strategy: Strategy::Rebase,
        mirror_dir: root.join("mirrors"),
        max_landing_attempts: 10,
        committer: Identity::default(),
        stale_check: false,
        change_sources: Vec::new(),
    };
    let merger = runtime
        .block_on(GitMerger::new(HashMap::from([("bench".to_owned(), queue)])))
        .unwrap();
    let shas: Vec<String> = (0..changes)
        .map(|c| git(&template, &["rev-parse", &format!("c{c}")]))
        .collect();

    let per_round = changes.div_ceil(rounds);
    let (mut ours_rate, mut theirs_rate) = (Vec::new(), Vec::new());
    let (mut ours_total, mut theirs_total) = (Duration::ZERO, Duration::ZERO);
    for (round, chunk) in (0..changes)
        .collect::<Vec<_>>()
        .chunks(per_round)
        .enumerate()
    {
        // Alternate which side goes first, so neither always runs on a warmer cache.
        let sides: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for ours_side in sides {
            let t = Instant::now();
            for &c in chunk {
                if ours_side {
                    let uri = ChangeUri::file(&ours, &format!("refs/heads/c{c}"), &shas[c]);
                    let request = MergeRequest {
                        id: format!("bench/batch/{c}"),
                        queue_name: "bench".into(),
                        steps: vec![MergeStep {
                            step_id: format!("bench/{c}"),
                            change: Some(Change { uris: vec![uri] }),
                            strategy: Strategy::Rebase as i32,
                        }],
                    };
                    match runtime.block_on(merger.merge(&request, true)) {
                        Ok(Verdict::Succeeded { outputs }) => assert_eq!(outputs[0].len(), 3),
                        other => panic!("change {c}: {other:?}"),
                    }
                } else {
                    land_in_worktree(&work, &format!("c{c}"), &base);
                }
            }
            let elapsed = t.elapsed();
            let rate = chunk.len() as f64 / elapsed.as_secs_f64();
            if ours_side {
                ours_rate.push(rate);
                ours_total += elapsed;
            } else {
                theirs_rate.push(rate);
                theirs_total += elapsed;
            }
        }
    }
    // Both targets hold the same content: every change, 3 commits each, linear.
    for target in [&ours, &theirs] {
        let range = format!("{base}..main");
        let count = git(target, &["rev-list", "--count", "--no-merges", &range]);
        assert_eq!(count, (3 * changes).to_string(), "{}", target.display());
    }
    assert_eq!(
        git(&ours, &["rev-parse", "main^{tree}"]),
        git(&theirs, &["rev-parse", "main^{tree}"])
    );
    let (o_min, o_med, o_max) = stats(&mut ours_rate);
    let (t_min, t_med, t_max) = stats(&mut theirs_rate);
    println!(
        "landings/s over {} rounds of {per_round} changes (min / median / max):",
        ours_rate.len()
    );
    println!("  git merger (object database, CAS push)  {o_min:8.1} {o_med:8.1} {o_max:8.1}   total {:.1} s", ours_total.as_secs_f64());
    println!("  worktree (reset --hard, cherry-pick)    {t_min:8.1} {t_med:8.1} {t_max:8.1}   total {:.1} s", theirs_total.as_secs_f64());
    println!(
        "  ratio (median): {:.1}x; overall: {:.1}x",
        o_med / t_med,
        theirs_total.as_secs_f64() / ours_total.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&root);
}
