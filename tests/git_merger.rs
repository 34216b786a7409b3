//! The git merger on real repositories in temp dirs: every strategy, stacks, conflicts,
//! invalid requests, replays, dry runs, missing commits, unreachable remotes and contention.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use keyway::base::change::Change;
use keyway::base::mergestrategy::Strategy;
use keyway::merge_service::uri::ChangeUri;
use keyway::merge_service::{GitMerger, GitQueue, Identity, Merger, Verdict};
use keyway::runway::messagequeue::{MergeRequest, MergeStep};

/// A bare `origin.git` with some history on `main`, and a working clone to make changes in.
struct Repos {
    root: PathBuf,
    origin: PathBuf,
    work: PathBuf,
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Author")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Author")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env_remove("GIT_DIR")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repos {
    fn new(name: &str) -> Repos {
        let root = std::env::temp_dir().join(format!(
            "keyway-git-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&root).unwrap();
        let origin = root.join("origin.git");
        let work = root.join("work");
        git_in(&root, &["init", "-q", "--bare", "-b", "main", "origin.git"]);
        git_in(&root, &["clone", "-q", origin.to_str().unwrap(), "work"]);
        git_in(&work, &["checkout", "-q", "-b", "main"]);
        let repos = Repos { root, origin, work };
        repos.write("README", "hello\n");
        repos.write("src/lib.txt", "one\ntwo\nthree\n");
        repos.commit("initial");
        repos.write("docs/guide.txt", "guide\n");
        repos.commit("docs");
        git_in(&repos.work, &["push", "-q", "origin", "main"]);
        repos
    }

    fn write(&self, path: &str, text: &str) {
        let file = self.work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        git_in(&self.work, &["add", "-A"]);
        git_in(&self.work, &["commit", "-q", "-m", message]);
        git_in(&self.work, &["rev-parse", "HEAD"])
    }

    /// A branch `name` off `base` with one commit per (path, text), pushed; its URI.
    fn change(&self, name: &str, base: &str, commits: &[(&str, &str)]) -> String {
        git_in(&self.work, &["checkout", "-q", "-B", name, base]);
        let mut sha = String::new();
        for (i, (path, text)) in commits.iter().enumerate() {
            self.write(path, text);
            sha = self.commit(&format!("{name}: commit {}", i + 1));
        }
        git_in(&self.work, &["push", "-q", "-f", "origin", name]);
        git_in(&self.work, &["checkout", "-q", "main"]);
        ChangeUri::file(&self.origin, &format!("refs/heads/{name}"), &sha)
    }

    fn tip(&self) -> String {
        git_in(&self.origin, &["rev-parse", "main"])
    }

    fn show(&self, rev: &str, path: &str) -> String {
        git_in(&self.origin, &["show", &format!("{rev}:{path}")])
    }

    fn queue(&self, strategy: Strategy) -> GitQueue {
        self.queue_with_mirror(strategy, self.root.join("mirrors"))
    }

    fn queue_with_mirror(&self, strategy: Strategy, mirror_dir: PathBuf) -> GitQueue {
        GitQueue {
            repository: self.origin.display().to_string(),
            branch: "main".into(),
            default_strategy: strategy,
            mirror_dir,
            max_landing_attempts: 10,
            committer: Identity::default(),
            stale_check: false,
            change_sources: Vec::new(),
        }
    }
}

impl Drop for Repos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Nothing to prepare here; `git_merger_old_git.rs` runs these cases with an older git.
#[allow(dead_code)]
pub(crate) fn before_merger() {}

async fn merger(queue: GitQueue) -> GitMerger {
    crate::before_merger();
    GitMerger::new(HashMap::from([("q".to_owned(), queue)]))
        .await
        .unwrap()
}

fn step(id: &str, strategy: Strategy, uris: &[&str]) -> MergeStep {
    MergeStep {
        step_id: id.into(),
        change: Some(Change {
            uris: uris.iter().map(|u| u.to_string()).collect(),
        }),
        strategy: strategy as i32,
    }
}

fn request(steps: Vec<MergeStep>) -> MergeRequest {
    MergeRequest {
        id: "q/batch/1".into(),
        queue_name: "q".into(),
        steps,
    }
}

fn outputs(v: Verdict) -> Vec<Vec<String>> {
    match v {
        Verdict::Succeeded { outputs } => outputs,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failure(v: Verdict) -> (String, Option<(usize, String)>) {
    match v {
        Verdict::Failed { reason, step } => (reason, step),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// `%an <%ae>|%cn <%ce>|%s|%P` of a commit.
fn describe(r: &Repos, sha: &str) -> Vec<String> {
    git_in(
        &r.origin,
        &["show", "-s", "--format=%an <%ae>|%cn <%ce>|%s|%P", sha],
    )
    .split('|')
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn rebase_picks_every_commit_onto_the_tip_in_order() {
    let r = Repos::new("rebase");
    let base = r.tip();
    let uri = r.change(
        "feature",
        "main",
        &[
            ("src/new.txt", "new\n"),
            ("src/lib.txt", "one\ntwo\nthree\nfour\n"),
        ],
    );
    // The target moves on after the change branched off.
    r.write("docs/guide.txt", "guide v2\n");
    r.commit("guide v2");
    git_in(&r.work, &["push", "-q", "origin", "main"]);
    let moved = r.tip();
    assert_ne!(base, moved);

    let m = merger(r.queue(Strategy::Rebase)).await;
    let out = outputs(
        m.merge(
            &request(vec![step("q/1", Strategy::Default, &[&uri])]),
            true,
        )
        .await
        .unwrap(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 2, "one new commit per picked commit");
    assert_eq!(r.tip(), out[0][1]);
    let first = describe(&r, &out[0][0]);
    assert_eq!(
        first[0], "Ada Author <ada@example.com>",
        "the author is kept"
    );
    assert_eq!(first[1], "Keyway Runway <runway@keyway.invalid>");
    assert_eq!(first[2], "feature: commit 1");
    assert_eq!(first[3], moved, "picked onto the moved tip: linear history");
    assert_eq!(describe(&r, &out[0][1])[3], out[0][0]);
    assert_eq!(r.show("main", "src/lib.txt"), "one\ntwo\nthree\nfour");
    assert_eq!(r.show("main", "docs/guide.txt"), "guide v2");
    assert_eq!(r.show("main", "src/new.txt"), "new");
}

#[tokio::test]
async fn a_replayed_request_lands_nothing_twice() {
    let r = Repos::new("replay");
    let uri = r.change("feature", "main", &[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let m = merger(r.queue(Strategy::Rebase)).await;
    let req = request(vec![step("q/1", Strategy::Rebase, &[&uri])]);
    let first = outputs(m.merge(&req, true).await.unwrap());
    assert_eq!(first[0].len(), 2);
    let tip = r.tip();
    // The answer was lost; the request comes again.
    for strategy in [Strategy::Rebase, Strategy::SquashRebase, Strategy::Merge] {
        let again = req_with(&req, strategy);
        let out = outputs(m.merge(&again, true).await.unwrap());
        assert_eq!(out, vec![Vec::<String>::new()], "{strategy:?}");
        assert_eq!(r.tip(), tip, "{strategy:?} landed something twice");
    }
}

fn req_with(req: &MergeRequest, strategy: Strategy) -> MergeRequest {
    let mut r = req.clone();
    for s in &mut r.steps {
        s.strategy = strategy as i32;
    }
    r
}

#[tokio::test]
async fn a_stack_applies_in_order_each_on_top_of_the_last() {
    let r = Repos::new("stack");
    let bottom = r.change("bottom", "main", &[("stack.txt", "1\n")]);
    let bottom_sha = bottom.rsplit('/').next().unwrap().to_owned();
    let top = r.change("top", &bottom_sha, &[("stack.txt", "1\n2\n")]);
    let m = merger(r.queue(Strategy::Rebase)).await;
    let out = outputs(
        m.merge(
            &request(vec![step("q/1", Strategy::Rebase, &[&bottom, &top])]),
            true,
        )
        .await
        .unwrap(),
    );
    assert_eq!(out[0].len(), 2, "the top's range starts above the bottom");
    assert_eq!(r.show("main", "stack.txt"), "1\n2");
}

#[tokio::test]
async fn squash_rebase_writes_one_commit_per_change() {
    let r = Repos::new("squash");
    let uri = r.change(
        "feature",
        "main",
        &[("x.txt", "x\n"), ("y.txt", "y\n"), ("x.txt", "x2\n")],
    );
    let m = merger(r.queue(Strategy::Rebase)).await;
    let out = outputs(
        m.merge(
            &request(vec![step("q/7", Strategy::SquashRebase, &[&uri])]),
            true,
        )
        .await
        .unwrap(),
    );
    assert_eq!(out[0].len(), 1);
    let d = describe(&r, &out[0][0]);
    assert_eq!(d[0], "Ada Author <ada@example.com>");
    assert_eq!(d[2], "squash: q/7 (feature)");
    assert_eq!(r.show("main", "x.txt"), "x2");
    assert_eq!(r.show("main", "y.txt"), "y");
}

#[tokio::test]
async fn merge_writes_a_merge_commit_unless_already_merged() {
    let r = Repos::new("merge");
    let uri = r.change("feature", "main", &[("m.txt", "m\n")]);
    let sha = uri.rsplit('/').next().unwrap().to_owned();
    let m = merger(r.queue(Strategy::Rebase)).await;
    let req = request(vec![step("q/1", Strategy::Merge, &[&uri])]);
    let out = outputs(m.merge(&req, true).await.unwrap());
    assert_eq!(out[0].len(), 1);
    let parents = describe(&r, &out[0][0])[3].clone();
    assert_eq!(parents.split(' ').nth(1), Some(sha.as_str()));
    assert_eq!(
        outputs(m.merge(&req, true).await.unwrap()),
        vec![Vec::<String>::new()]
    );
}

#[tokio::test]
async fn promote_fast_forwards_or_conflicts() {
    let r = Repos::new("promote");
    let uri = r.change("release", "main", &[("v.txt", "1\n")]);
    let sha = uri.rsplit('/').next().unwrap().to_owned();
    let m = merger(r.queue(Strategy::Rebase)).await;
    let req = request(vec![step("q/1", Strategy::Promote, &[&uri])]);
    assert_eq!(
        outputs(m.merge(&req, true).await.unwrap()),
        vec![vec![sha.clone()]]
    );
    assert_eq!(r.tip(), sha);
    // Already there: success with the same sha.
    assert_eq!(
        outputs(m.merge(&req, true).await.unwrap()),
        vec![vec![sha.clone()]]
    );
    // Diverged: not a fast-forward.
    let old = git_in(&r.work, &["rev-parse", "main~1"]);
    let diverged = r.change("hotfix", &old, &[("h.txt", "h\n")]);
    let (reason, step) = failure(
        m.merge(
            &request(vec![step("q/2", Strategy::Promote, &[&diverged])]),
            true,
        )
        .await
        .unwrap(),
    );
    assert!(
        reason.contains("step q/2: cannot promote refs/heads/hotfix"),
        "{reason}"
    );
    assert!(reason.contains("not a fast-forward of main"), "{reason}");
    assert_eq!(step.unwrap().0, 0);
    assert_eq!(r.tip(), sha);
}

#[tokio::test]
async fn a_conflict_names_the_step_the_change_and_the_paths() {
    let r = Repos::new("conflict");
    let uri = r.change(
        "feature",
        "main",
        &[("src/lib.txt", "ONE\ntwo\nthree\n"), ("README", "hi\n")],
    );
    r.write("src/lib.txt", "uno\ntwo\nthree\n");
    r.write("README", "hey\n");
    r.commit("conflicting edit");
    git_in(&r.work, &["push", "-q", "origin", "main"]);
    let tip = r.tip();
    for strategy in [Strategy::Rebase, Strategy::SquashRebase, Strategy::Merge] {
        let m = merger(r.queue(Strategy::Rebase)).await;
        let (reason, step) = failure(
            m.merge(
                &request(vec![
                    step(
                        "q/0",
                        Strategy::Rebase,
                        &[&r.change("clean", "main", &[("c.txt", "c\n")])],
                    ),
                    step("q/1", strategy, &[&uri]),
                ]),
                true,
            )
            .await
            .unwrap(),
        );
        assert!(
            reason.starts_with("step q/1: refs/heads/feature at "),
            "{strategy:?}: {reason}"
        );
        assert!(
            reason.contains(" conflicts with main in "),
            "{strategy:?}: {reason}"
        );
        assert!(reason.contains("src/lib.txt"), "{strategy:?}: {reason}");
        assert_eq!(step.unwrap().0, 1);
        assert_eq!(
            r.tip(),
            tip,
            "{strategy:?}: nothing lands from a failed batch"
        );
    }
}

#[tokio::test]
async fn a_dry_run_computes_and_pushes_nothing() {
    let r = Repos::new("dry");
    let uri = r.change("feature", "main", &[("d.txt", "d\n")]);
    let tip = r.tip();
    let m = merger(r.queue(Strategy::Rebase)).await;
    let req = request(vec![step("q/1", Strategy::Rebase, &[&uri])]);
    assert_eq!(
        outputs(m.merge(&req, false).await.unwrap()),
        vec![Vec::<String>::new()]
    );
    assert_eq!(r.tip(), tip);
    // A dry run still finds conflicts.
    r.write("d.txt", "other\n");
    r.commit("d elsewhere");
    git_in(&r.work, &["push", "-q", "origin", "main"]);
    let (reason, _) = failure(m.merge(&req, false).await.unwrap());
    assert!(reason.contains("conflicts with main in d.txt"), "{reason}");
}

#[tokio::test]
async fn invalid_requests_are_answered_with_the_rule_they_break() {
    let r = Repos::new("invalid");
    let uri = r.change("feature", "main", &[("i.txt", "i\n")]);
    let second = r.change("second", "main", &[("j.txt", "j\n")]);
    let missing = ChangeUri::file(&r.origin, "refs/heads/gone", &"ab".repeat(20));
    let git_uri = format!(
        "git://git.example.com/pay/refs%2Fheads%2Fx/{}",
        "cd".repeat(20)
    );
    git_in(&r.work, &["checkout", "-q", "--orphan", "island"]);
    git_in(&r.work, &["rm", "-rq", "--cached", "."]);
    for tracked in ["src", "docs"] {
        std::fs::remove_dir_all(r.work.join(tracked)).unwrap();
    }
    std::fs::remove_file(r.work.join("README")).unwrap();
    r.write("island.txt", "alone\n");
    let island_sha = r.commit("an unrelated root");
    git_in(&r.work, &["push", "-q", "origin", "island"]);
    git_in(&r.work, &["checkout", "-q", "-f", "main"]);
    let island = ChangeUri::file(&r.origin, "refs/heads/island", &island_sha);
    let tip = r.tip();

    let m = merger(r.queue(Strategy::Rebase)).await;
    let mut no_change = step("q/1", Strategy::Rebase, &[]);
    no_change.change = None;
    let mut bad_strategy = step("q/1", Strategy::Rebase, &[&uri]);
    bad_strategy.strategy = 42;
    for (steps, says) in [
        (vec![], "invalid request: no steps"),
        (vec![no_change], "step q/1: invalid request: no change"),
        (
            vec![step("q/1", Strategy::Rebase, &[])],
            "step q/1: invalid request: the change has no URIs",
        ),
        (
            vec![bad_strategy],
            "step q/1: invalid request: unknown strategy 42",
        ),
        (
            vec![step("q/1", Strategy::Rebase, &["https://h/r/x/y"])],
            "step q/1: invalid request: change URI https://h/r/x/y: unsupported scheme",
        ),
        (
            vec![
                step("q/1", Strategy::Rebase, &[&uri]),
                step("q/2", Strategy::Rebase, &[&git_uri]),
            ],
            "step q/2: invalid request: git://git.example.com/pay/",
        ),
        (
            vec![step("q/1", Strategy::Promote, &[&uri, &second])],
            "step q/1: invalid request: PROMOTE needs a request of exactly one step with one URI",
        ),
        (
            vec![
                step("q/1", Strategy::Rebase, &[&uri]),
                step("q/2", Strategy::Promote, &[&second]),
            ],
            "step q/2: invalid request: PROMOTE needs",
        ),
        (
            vec![step("q/1", Strategy::Rebase, &[&missing])],
            "step q/1: commit abababababababababababababababababababab not found in",
        ),
        (
            vec![step("q/1", Strategy::Rebase, &[&island])],
            "have unrelated histories: use MERGE",
        ),
        (
            vec![step("q/1", Strategy::SquashRebase, &[&island])],
            "have unrelated histories: use MERGE",
        ),
    ] {
        let (reason, _) = failure(m.merge(&request(steps), true).await.unwrap());
        assert!(reason.contains(says), "expected {says:?} in {reason:?}");
    }
    let mut other_queue = request(vec![step("q/1", Strategy::Rebase, &[&uri])]);
    other_queue.queue_name = "elsewhere".into();
    let (reason, _) = failure(m.merge(&other_queue, true).await.unwrap());
    assert!(
        reason.contains("queue \"elsewhere\" has no target repository configured"),
        "{reason}"
    );
    assert_eq!(r.tip(), tip, "no invalid request lands anything");
    // Unrelated histories are fine for MERGE.
    let out = outputs(
        m.merge(
            &request(vec![step("q/1", Strategy::Merge, &[&island])]),
            true,
        )
        .await
        .unwrap(),
    );
    assert_eq!(out[0].len(), 1);
    assert_eq!(r.show("main", "island.txt"), "alone");
}

#[tokio::test]
async fn an_unreachable_remote_is_a_retryable_error() {
    let r = Repos::new("unreachable");
    let uri = r.change("feature", "main", &[("u.txt", "u\n")]);
    let mut queue = r.queue(Strategy::Rebase);
    queue.repository = r.root.join("no-such-repo.git").display().to_string();
    let m = merger(queue).await;
    let e = m
        .merge(&request(vec![step("q/1", Strategy::Rebase, &[&uri])]), true)
        .await
        .unwrap_err();
    assert!(e.0.contains("cannot fetch main from"), "{e}");
    // A change on a repository that is not there is not a verdict on the change either.
    let m = merger(r.queue(Strategy::Rebase)).await;
    let gone = ChangeUri::file(&r.root.join("gone.git"), "refs/heads/x", &"ef".repeat(20));
    let e = m
        .merge(
            &request(vec![step("q/1", Strategy::Rebase, &[&gone])]),
            true,
        )
        .await
        .unwrap_err();
    assert!(e.0.contains("cannot reach"), "{e}");
}

#[tokio::test]
async fn a_stale_change_is_refused_when_asked() {
    let r = Repos::new("stale");
    let uri = r.change("feature", "main", &[("s.txt", "1\n")]);
    r.change("feature", "main", &[("s.txt", "2\n")]);
    let mut queue = r.queue(Strategy::Rebase);
    queue.stale_check = true;
    let m = merger(queue).await;
    let (reason, _) = failure(
        m.merge(&request(vec![step("q/1", Strategy::Rebase, &[&uri])]), true)
            .await
            .unwrap(),
    );
    assert!(
        reason.contains("stale change: refs/heads/feature is now at"),
        "{reason}"
    );
}

async fn land(m: &GitMerger, uri: &str, i: usize) -> Vec<Vec<String>> {
    let req = request(vec![step(&format!("q/{i}"), Strategy::Rebase, &[uri])]);
    outputs(m.merge(&req, true).await.unwrap())
}

/// Two Runway processes (their own mirrors) landing different changes on one branch at once,
/// with the target at `repository` (the local bare path, or a `git://` URL of it).
async fn contend(r: &Repos, repository: &str) {
    let n = 8;
    let mut uris = Vec::new();
    for i in 0..2 * n {
        uris.push(r.change(&format!("c{i}"), "main", &[(&format!("f{i}.txt"), "x\n")]));
    }
    let start = r.tip();
    // Two Runway processes: their own mirrors, one target.
    let queue = |mirror: &str| GitQueue {
        repository: repository.to_owned(),
        ..r.queue_with_mirror(Strategy::Rebase, r.root.join(mirror))
    };
    let a = merger(queue("mirror-a")).await;
    let b = merger(queue("mirror-b")).await;
    let (left, right) = tokio::join!(
        async {
            let mut out = Vec::new();
            for (i, u) in uris.iter().enumerate().step_by(2) {
                out.push(land(&a, u, i).await);
            }
            out
        },
        async {
            let mut out = Vec::new();
            for (i, u) in uris.iter().enumerate().skip(1).step_by(2) {
                out.push(land(&b, u, i).await);
            }
            out
        }
    );
    let landed: Vec<String> = left.into_iter().chain(right).flatten().flatten().collect();
    assert_eq!(landed.len(), 2 * n, "every change landed once");
    let range = format!("{start}..main");
    let history = git_in(&r.origin, &["rev-list", "--parents", &range]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2 * n, "nothing landed twice");
    assert!(
        lines.iter().all(|l| l.split(' ').count() == 2),
        "linear history"
    );
    for i in 0..2 * n {
        assert_eq!(r.show("main", &format!("f{i}.txt")), "x");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_mergers_on_one_local_branch_land_every_change_exactly_once() {
    let r = Repos::new("contention-local");
    contend(&r, &r.origin.display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_mergers_pushing_to_one_branch_land_every_change_exactly_once() {
    let r = Repos::new("contention-push");
    let daemon = Daemon::start(&r.root);
    contend(&r, &format!("git://127.0.0.1:{}/origin.git", daemon.1)).await;
}

/// A `pre-push` hook in the merger's mirror that pushes an outside commit to the target first,
/// `times` times: the push's lease then fails and the merger must recompute.
fn interfere(r: &Repos, mirror_dir: &Path, times: usize) {
    let mirror = std::fs::read_dir(mirror_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "git"))
        .expect("the mirror exists after the first request");
    let counter = r.root.join("outside-pushes");
    let hook = mirror.join("hooks/pre-push");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nunset GIT_DIR\nn=$(cat '{c}' 2>/dev/null || echo 0)\n[ \"$n\" -ge {times} ] && exit 0\necho $((n + 1)) > '{c}'\ncd '{w}' || exit 1\nexport GIT_AUTHOR_NAME=o GIT_AUTHOR_EMAIL=o@x GIT_COMMITTER_NAME=o GIT_COMMITTER_EMAIL=o@x\ngit pull -q --no-rebase --no-edit origin main >/dev/null 2>&1\necho $n > outside-$n.txt && git add -A && git commit -qm outside-$n && git push -q origin HEAD:main\n",
            c = counter.display(),
            w = r.work.display(),
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
}

#[tokio::test]
async fn an_outside_push_between_compute_and_push_is_recomputed_on() {
    let r = Repos::new("outside");
    let warm = r.change("warm", "main", &[("w.txt", "w\n")]);
    let uri = r.change("feature", "main", &[("o.txt", "o\n")]);
    // Through a transport, so the landing is a push from a mirror whose hook can interfere.
    let daemon = Daemon::start(&r.root);
    let remote = |max_landing_attempts| GitQueue {
        repository: format!("git://127.0.0.1:{}/origin.git", daemon.1),
        max_landing_attempts,
        ..r.queue(Strategy::Rebase)
    };
    let m = merger(remote(10)).await;
    outputs(
        m.merge(
            &request(vec![step("q/0", Strategy::Rebase, &[&warm])]),
            true,
        )
        .await
        .unwrap(),
    );
    interfere(&r, &r.root.join("mirrors"), 1);
    let out = outputs(
        m.merge(&request(vec![step("q/1", Strategy::Rebase, &[&uri])]), true)
            .await
            .unwrap(),
    );
    assert_eq!(r.tip(), out[0][0]);
    let parent = describe(&r, &out[0][0])[3].clone();
    assert_eq!(
        describe(&r, &parent)[2],
        "outside-0",
        "landed on top of the outside push"
    );
    assert_eq!(r.show("main", "outside-0.txt"), "0");
    assert_eq!(r.show("main", "o.txt"), "o");

    // Contention that never ends gives up, retryably, after the configured attempts.
    let m = merger(remote(3)).await;
    interfere(&r, &r.root.join("mirrors"), 100);
    let again = r.change("again", "main", &[("g.txt", "g\n")]);
    let e = m
        .merge(
            &request(vec![step("q/2", Strategy::Rebase, &[&again])]),
            true,
        )
        .await
        .unwrap_err();
    assert!(
        e.0.starts_with("exceeded 3 landing attempts due to contention"),
        "{e}"
    );
}

/// `git daemon` serving `root` on a free loopback port, stopped when dropped. The daemon is
/// run from git's exec path, not through `git daemon`: killing that `git` would leave its
/// `git-daemon` child running after the test.
struct Daemon(std::process::Child, u16);

impl Daemon {
    fn start(root: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git runs");
        assert!(exec_path.status.success(), "git --exec-path failed");
        let exec_path = String::from_utf8(exec_path.stdout).expect("a UTF-8 exec path");
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args([
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
                "--enable=receive-pack",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Daemon(child, port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn git_uris_are_fetched_over_the_git_protocol() {
    let r = Repos::new("daemon");
    let file_uri = r.change("feature", "main", &[("g.txt", "over git://\n")]);
    let sha = file_uri.rsplit('/').next().unwrap().to_owned();
    let daemon = Daemon::start(&r.root);
    let uri = format!(
        "git://127.0.0.1:{}/origin.git/refs%2Fheads%2Ffeature/{sha}",
        daemon.1
    );
    let m = merger(r.queue(Strategy::Rebase)).await;
    let out = outputs(
        m.merge(&request(vec![step("q/1", Strategy::Rebase, &[&uri])]), true)
            .await
            .unwrap(),
    );
    assert_eq!(out[0].len(), 1);
    assert_eq!(r.show("main", "g.txt"), "over git://");
    // A sha the daemon's repository does not have, while the daemon answers: not found.
    let missing = format!(
        "git://127.0.0.1:{}/origin.git/refs%2Fheads%2Ffeature/{}",
        daemon.1,
        "12".repeat(20)
    );
    let (reason, _) = failure(
        m.merge(
            &request(vec![step("q/2", Strategy::Rebase, &[&missing])]),
            true,
        )
        .await
        .unwrap(),
    );
    assert!(
        reason.contains(
            "commit 1212121212121212121212121212121212121212 not found in git://127.0.0.1:"
        ),
        "{reason}"
    );
    // No daemon on the port: an infrastructure failure, retried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = missing.replace(&format!(":{}/", daemon.1), &format!(":{closed}/"));
    let e = m
        .merge(
            &request(vec![step("q/3", Strategy::Rebase, &[&nobody])]),
            true,
        )
        .await
        .unwrap_err();
    assert!(e.0.contains("cannot reach git://127.0.0.1:"), "{e}");
}

#[tokio::test]
async fn a_push_the_remote_refuses_is_an_error_with_its_reason_not_contention() {
    let r = Repos::new("refused");
    let uri = r.change("feature", "main", &[("r.txt", "r\n")]);
    let hook = r.origin.join("hooks/pre-receive");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\necho 'main is frozen' >&2\nexit 1\n").unwrap();
    Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    let daemon = Daemon::start(&r.root);
    let tip = r.tip();
    let m = merger(GitQueue {
        repository: format!("git://127.0.0.1:{}/origin.git", daemon.1),
        ..r.queue(Strategy::Rebase)
    })
    .await;
    let e = m
        .merge(&request(vec![step("q/1", Strategy::Rebase, &[&uri])]), true)
        .await
        .unwrap_err();
    assert!(
        e.0.contains("refused the push to main: [remote rejected]"),
        "{e}"
    );
    assert!(e.0.contains("pre-receive hook declined"), "{e}");
    assert!(!e.0.contains("contention"), "{e}");
    assert_eq!(r.tip(), tip);
}

#[tokio::test]
async fn changes_come_only_from_the_sources_the_queue_allows() {
    let r = Repos::new("sources");
    let uri = r.change("feature", "main", &[("s.txt", "s\n")]);
    let tip = r.tip();
    let root = r.root.display().to_string();
    for (sources, allowed) in [
        (vec![format!("{root}/")], true),
        (vec![r.origin.display().to_string()], true),
        (
            vec![
                "git://git.example.com/".to_owned(),
                format!("{root}/origin.git/"),
            ],
            true,
        ),
        (vec![format!("{root}/orig")], false),
        (vec!["git://git.example.com/".to_owned()], false),
    ] {
        let m = merger(GitQueue {
            change_sources: sources.clone(),
            ..r.queue(Strategy::Rebase)
        })
        .await;
        let verdict = m
            .merge(
                &request(vec![step("q/1", Strategy::Rebase, &[&uri])]),
                false,
            )
            .await
            .unwrap();
        match (allowed, verdict) {
            (true, Verdict::Succeeded { .. }) => {}
            (false, Verdict::Failed { reason, .. }) => assert!(
                reason.contains("is not from a source this queue takes changes from"),
                "{sources:?}: {reason}"
            ),
            (_, other) => panic!("{sources:?}: {other:?}"),
        }
    }
    assert_eq!(r.tip(), tip);
}
