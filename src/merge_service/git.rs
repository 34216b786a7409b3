//! Running git: a scrubbed environment, one bare mirror per target repository, and the object
//! database operations a landing is made of (no worktree, no index).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::merger::MergerError;

/// The oldest git with `merge-tree --write-tree`.
pub(super) const MIN_GIT: (u32, u32) = (2, 38);

/// Environment variables passed through to git: what its transports need (ssh agent and
/// command, proxies, CA bundles) and where things are. Everything else is dropped, so no
/// system or user configuration, prompt or locale changes what git does.
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Who commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Name.
    pub name: String,
    /// Email address.
    pub email: String,
}

impl Identity {
    /// Parse `Name <email>`.
    pub fn parse(text: &str) -> Option<Identity> {
        let (name, rest) = text.trim().split_once('<')?;
        let email = rest.strip_suffix('>')?;
        let name = name.trim();
        if name.is_empty()
            || email.is_empty()
            || email.contains(['<', '>', '\n'])
            || name.contains(['<', '>', '\n'])
        {
            return None;
        }
        Some(Identity {
            name: name.to_owned(),
            email: email.to_owned(),
        })
    }
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "Keyway Runway".into(),
            email: "runway@keyway.invalid".into(),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <{}>", self.name, self.email)
    }
}

/// What a commit object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CommitInfo {
    /// Its tree.
    pub(super) tree: String,
    /// Its parents, first parent first.
    pub(super) parents: Vec<String>,
    /// Author name, email and date (`<seconds> <zone>`).
    pub(super) author: (String, String, String),
    /// The message, as stored.
    pub(super) message: Vec<u8>,
}

impl CommitInfo {
    /// Parse the body of a commit object.
    pub(super) fn parse(body: &[u8]) -> Option<CommitInfo> {
        let split = body.windows(2).position(|w| w == b"\n\n");
        let (headers, message) = match split {
            Some(at) => (&body[..at], body[at + 2..].to_vec()),
            None => (body, Vec::new()),
        };
        let headers = std::str::from_utf8(headers).ok()?;
        let mut tree = None;
        let mut parents = Vec::new();
        let mut author = None;
        for line in headers.lines() {
            if let Some(t) = line.strip_prefix("tree ") {
                tree = Some(t.to_owned());
            } else if let Some(p) = line.strip_prefix("parent ") {
                parents.push(p.to_owned());
            } else if let Some(a) = line.strip_prefix("author ") {
                let (name, rest) = a.split_once(" <")?;
                let (email, date) = rest.split_once("> ")?;
                author = Some((name.to_owned(), email.to_owned(), date.to_owned()));
            }
        }
        Some(CommitInfo {
            tree: tree?,
            parents,
            author: author?,
            message,
        })
    }
}

/// The result of a three-way merge of trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MergedTree {
    /// It merged: the new tree.
    Clean(String),
    /// These paths conflict.
    Conflict(Vec<String>),
}

/// The outcome of a compare-and-swap push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pushed {
    /// The ref moved from the expected value to the new one.
    Landed,
    /// The ref was no longer at the expected value.
    Moved,
    /// The remote could not update the ref, which is what it says when the ref moved under
    /// it, and also when something else is wrong: its reason, to report if the ref did not move.
    NotUpdated(String),
}

/// A bare repository Keyway owns (the mirror of one target repository), and the git commands
/// run in it.
#[derive(Debug, Clone)]
pub(super) struct Repo {
    dir: PathBuf,
}

struct Run {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn stdout_line(&self) -> String {
        String::from_utf8_lossy(&self.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Git's reason: its first `fatal:` or `error:` line, else its last line.
    fn reason(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
        let line = lines()
            .find_map(|l| {
                l.strip_prefix("fatal: ")
                    .or_else(|| l.strip_prefix("error: "))
            })
            .or_else(|| lines().next_back())
            .unwrap_or("no output");
        redact(line)
    }
}

/// Credentials in any URL of `text` replaced by `***`.
pub(super) fn redact(text: &str) -> String {
    text.split(' ')
        .map(keyway_runtime::redis::config::redact_url)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `git` command with the scrubbed environment.
fn command(dir: Option<&Path>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("git");
    c.env_clear();
    for name in PASSED_THROUGH {
        if let Some(v) = std::env::var_os(name) {
            c.env(name, v);
        }
    }
    c.env("LANG", "C")
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
        // A transfer that stalls for a minute fails instead of hanging.
        .args(["-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        c.env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=15",
        );
    }
    if let Some(dir) = dir {
        c.env("GIT_DIR", dir);
    }
    c
}

/// The git that runs: whether `merge-tree` takes `--merge-base` (2.40+).
#[derive(Debug, Clone)]
pub(super) struct GitVersion {
    pub(super) merge_base_option: bool,
}

/// The installed git's version, checked against [`MIN_GIT`].
pub(super) async fn check_version() -> Result<GitVersion, String> {
    let out = command(None).arg("--version").output().await.map_err(|e| {
        format!(
            "cannot run git: {e} (install git {}.{} or newer)",
            MIN_GIT.0, MIN_GIT.1
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let version = text.strip_prefix("git version ").unwrap_or(&text);
    let mut parts = version
        .split(['.', ' '])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_GIT {
        return Err(format!(
            "{text} is too old: Runway needs git {}.{} or newer for merge-tree --write-tree",
            MIN_GIT.0, MIN_GIT.1
        ));
    }
    Ok(GitVersion {
        merge_base_option: found >= (2, 40),
    })
}

/// The bare repository on this machine that `repository` names (a path or a `file://` URL),
/// if it is one: Runway then works in its object database and moves its ref directly.
pub(super) fn local_bare(repository: &str) -> Option<PathBuf> {
    let path = match repository.split_once("://") {
        Some(("file", rest)) => PathBuf::from(rest),
        Some(_) => return None,
        None if repository.contains(':') && !repository.starts_with('/') => return None,
        None => PathBuf::from(repository),
    };
    let bare =
        path.join("HEAD").is_file() && path.join("objects").is_dir() && !path.join(".git").exists();
    bare.then_some(path)
}

impl Repo {
    /// The repository at `dir` as it is: nothing is created.
    pub(super) fn existing(dir: &Path) -> Repo {
        Repo {
            dir: dir.to_owned(),
        }
    }

    /// The bare repository at `dir`, created when missing.
    pub(super) async fn open(dir: &Path) -> Result<Repo, MergerError> {
        let repo = Repo {
            dir: dir.to_owned(),
        };
        if !dir.join("HEAD").is_file() {
            std::fs::create_dir_all(dir)
                .map_err(|e| MergerError(format!("cannot create mirror {}: {e}", dir.display())))?;
            let mut c = command(None);
            c.args(["init", "--quiet", "--bare"]).arg(dir);
            let out = run(c, None, "init").await?;
            if !out.status.success() {
                return Err(MergerError(format!(
                    "git init {} failed: {}",
                    dir.display(),
                    out.reason()
                )));
            }
        }
        Ok(repo)
    }

    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Run, MergerError> {
        let mut c = command(Some(&self.dir));
        c.args(args);
        run(c, stdin, args.first().copied().unwrap_or("git")).await
    }

    async fn ok(&self, args: &[&str]) -> Result<Run, MergerError> {
        let out = self.run(args, None).await?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(MergerError(format!(
                "git {} failed: {}",
                args.first().copied().unwrap_or_default(),
                out.reason()
            )))
        }
    }

    /// Fetch `refspecs` from `remote` in one go; git's reason when it fails.
    pub(super) async fn fetch(
        &self,
        remote: &str,
        refspecs: &[&str],
    ) -> Result<Result<(), String>, MergerError> {
        let mut args = vec![
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            remote,
        ];
        args.extend_from_slice(refspecs);
        let out = self.run(&args, None).await?;
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(out.reason())
        })
    }

    /// Whether `remote` answers (`git ls-remote`); git's reason when it does not.
    pub(super) async fn reachable(&self, remote: &str) -> Result<Result<(), String>, MergerError> {
        let out = self
            .run(&["ls-remote", "--heads", remote, "HEAD"], None)
            .await?;
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(out.reason())
        })
    }

    /// What `remote` has at `reference`, if anything.
    pub(super) async fn remote_ref(
        &self,
        remote: &str,
        reference: &str,
    ) -> Result<Option<String>, MergerError> {
        let out = self.ok(&["ls-remote", remote, reference]).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .find(|l| l.split('\t').nth(1) == Some(reference))
            .and_then(|l| l.split('\t').next())
            .map(str::to_owned))
    }

    /// The commit a local ref points at.
    pub(super) async fn resolve(&self, reference: &str) -> Result<Option<String>, MergerError> {
        let spec = format!("{reference}^{{commit}}");
        let out = self
            .run(&["rev-parse", "--verify", "--quiet", &spec], None)
            .await?;
        Ok(out.status.success().then(|| out.stdout_line()))
    }

    /// Which of the commits `shas` are not in the object database, in one `cat-file`.
    pub(super) async fn missing_commits(&self, shas: &[&str]) -> Result<Vec<String>, MergerError> {
        if shas.is_empty() {
            return Ok(Vec::new());
        }
        let input = shas.join("\n") + "\n";
        let out = self
            .run(
                &["cat-file", "--batch-check=%(objecttype)"],
                Some(input.as_bytes()),
            )
            .await?;
        if !out.status.success() {
            return Err(MergerError(format!(
                "git cat-file failed: {}",
                out.reason()
            )));
        }
        let answers = String::from_utf8_lossy(&out.stdout);
        let mut answers = answers.lines();
        Ok(shas
            .iter()
            .filter(|_| answers.next() != Some("commit"))
            .map(|s| (*s).to_owned())
            .collect())
    }

    /// Whether the commit `sha` is in the object database.
    pub(super) async fn has_commit(&self, sha: &str) -> Result<bool, MergerError> {
        let spec = format!("{sha}^{{commit}}");
        Ok(self
            .run(&["cat-file", "-e", &spec], None)
            .await?
            .status
            .success())
    }

    /// The commits `shas`, read in one `cat-file --batch`.
    pub(super) async fn commits(&self, shas: &[String]) -> Result<Vec<CommitInfo>, MergerError> {
        if shas.is_empty() {
            return Ok(Vec::new());
        }
        let input = shas.join("\n") + "\n";
        let out = self
            .run(&["cat-file", "--batch"], Some(input.as_bytes()))
            .await?;
        if !out.status.success() {
            return Err(MergerError(format!(
                "git cat-file failed: {}",
                out.reason()
            )));
        }
        let mut rest = out.stdout.as_slice();
        let mut found = Vec::with_capacity(shas.len());
        for sha in shas {
            let end = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| MergerError(format!("git cat-file: short output for {sha}")))?;
            let header = String::from_utf8_lossy(&rest[..end]).into_owned();
            let mut words = header.split(' ');
            let (kind, size) = (
                words.nth(1),
                words.next().and_then(|s| s.parse::<usize>().ok()),
            );
            let (Some("commit"), Some(size)) = (kind, size) else {
                return Err(MergerError(format!("{sha} is not a commit ({header})")));
            };
            let body = rest
                .get(end + 1..end + 1 + size)
                .ok_or_else(|| MergerError(format!("git cat-file: short object {sha}")))?;
            found.push(
                CommitInfo::parse(body)
                    .ok_or_else(|| MergerError(format!("commit {sha} does not parse")))?,
            );
            rest = rest.get(end + 2 + size..).unwrap_or_default();
        }
        Ok(found)
    }

    /// The best common ancestor of `a` and `b`, if they have one.
    pub(super) async fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, MergerError> {
        let out = self.run(&["merge-base", a, b], None).await?;
        match out.code() {
            Some(0) => Ok(Some(out.stdout_line())),
            Some(1) => Ok(None),
            _ => Err(MergerError(format!(
                "git merge-base failed: {}",
                out.reason()
            ))),
        }
    }

    /// Whether `a` is `b` or one of its ancestors.
    pub(super) async fn is_ancestor(&self, a: &str, b: &str) -> Result<bool, MergerError> {
        let out = self
            .run(&["merge-base", "--is-ancestor", a, b], None)
            .await?;
        match out.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(MergerError(format!(
                "git merge-base failed: {}",
                out.reason()
            ))),
        }
    }

    /// The commits on the first-parent chain of `tip` that `base` does not have, oldest first.
    pub(super) async fn first_parent_range(
        &self,
        base: &str,
        tip: &str,
    ) -> Result<Vec<String>, MergerError> {
        let range = format!("{base}..{tip}");
        let out = self
            .ok(&["rev-list", "--reverse", "--first-parent", &range])
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Three-way merge of the trees of commits `ours` and `theirs` on their merge base(s).
    pub(super) async fn merge_tree(
        &self,
        ours: &str,
        theirs: &str,
        allow_unrelated: bool,
    ) -> Result<MergedTree, MergerError> {
        self.merge_tree_on(None, ours, theirs, allow_unrelated)
            .await
    }

    /// [`Repo::merge_tree`] on an explicit merge base (git 2.40+).
    pub(super) async fn merge_tree_on(
        &self,
        base: Option<&str>,
        ours: &str,
        theirs: &str,
        allow_unrelated: bool,
    ) -> Result<MergedTree, MergerError> {
        let base = base.map(|b| format!("--merge-base={b}"));
        let mut args = vec!["merge-tree", "--write-tree", "--name-only", "--no-messages"];
        if let Some(b) = &base {
            args.push(b);
        }
        if allow_unrelated {
            args.push("--allow-unrelated-histories");
        }
        args.extend([ours, theirs]);
        let out = self.run(&args, None).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let tree = lines.next().unwrap_or_default().to_owned();
        match out.code() {
            Some(0) => Ok(MergedTree::Clean(tree)),
            Some(1) => {
                let mut paths: Vec<String> = lines
                    .take_while(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                paths.dedup();
                Ok(MergedTree::Conflict(paths))
            }
            _ => Err(MergerError(format!(
                "git merge-tree failed: {}",
                out.reason()
            ))),
        }
    }

    /// A new commit object.
    pub(super) async fn commit_tree(
        &self,
        tree: &str,
        parents: &[&str],
        message: &[u8],
        author: &(String, String, String),
        committer: &Identity,
    ) -> Result<String, MergerError> {
        let mut c = command(Some(&self.dir));
        c.arg("commit-tree").arg(tree);
        for p in parents {
            c.args(["-p", p]);
        }
        c.args(["-F", "-"])
            .env("GIT_AUTHOR_NAME", &author.0)
            .env("GIT_AUTHOR_EMAIL", &author.1)
            .env("GIT_AUTHOR_DATE", &author.2)
            .env("GIT_COMMITTER_NAME", &committer.name)
            .env("GIT_COMMITTER_EMAIL", &committer.email);
        let out = run(c, Some(message), "commit-tree").await?;
        if !out.status.success() {
            return Err(MergerError(format!(
                "git commit-tree failed: {}",
                out.reason()
            )));
        }
        Ok(out.stdout_line())
    }

    /// Move `reference` of this repository from `old` to `new`, only if it is still at `old`
    /// (`update-ref` checks under the ref's lock).
    pub(super) async fn update_ref(
        &self,
        reference: &str,
        old: &str,
        new: &str,
        why: &str,
    ) -> Result<Pushed, MergerError> {
        let out = self
            .run(&["update-ref", "-m", why, reference, new, old], None)
            .await?;
        if out.status.success() {
            return Ok(Pushed::Landed);
        }
        let text = String::from_utf8_lossy(&out.stderr);
        // Only a ref found elsewhere is contention; a stale lock file or a refusal is not.
        if text.contains("but expected") {
            Ok(Pushed::Moved)
        } else {
            Err(MergerError(format!(
                "git update-ref failed: {}",
                out.reason()
            )))
        }
    }

    /// Move `branch` of `remote` from `old` to `new`, only if it is still at `old`.
    pub(super) async fn push(
        &self,
        remote: &str,
        branch: &str,
        old: &str,
        new: &str,
    ) -> Result<Pushed, MergerError> {
        let target = format!("refs/heads/{branch}");
        let refspec = format!("{new}:{target}");
        let lease = format!("--force-with-lease={target}:{old}");
        let out = self
            .run(
                &["push", "--porcelain", "--quiet", &lease, remote, &refspec],
                None,
            )
            .await?;
        if out.status.success() {
            return Ok(Pushed::Landed);
        }
        let porcelain = String::from_utf8_lossy(&out.stdout);
        let rejected = porcelain
            .lines()
            .find(|l| l.starts_with('!') && l.contains(&target));
        // The lease failed or the branch moved: contention. A hook or a protected branch
        // refusing the push is not, and retrying would not change its mind.
        let moved = ["stale info", "fetch first", "non-fast-forward"];
        let reason = |line: &str| redact(line.rsplit('\t').next().unwrap_or(line).trim());
        if rejected.is_some_and(|l| moved.iter().any(|m| l.contains(m))) {
            Ok(Pushed::Moved)
        } else if let Some(line) = rejected.filter(|l| l.contains("failed to update ref")) {
            Ok(Pushed::NotUpdated(format!(
                "{} could not update {branch}: {}",
                redact(remote),
                reason(line)
            )))
        } else if let Some(line) = rejected {
            Err(MergerError(format!(
                "{} refused the push to {branch}: {}",
                redact(remote),
                reason(line)
            )))
        } else {
            Err(MergerError(format!(
                "git push to {} failed: {}",
                redact(remote),
                out.reason()
            )))
        }
    }
}

/// The longest any one git command may run before it is killed and the landing retried.
const GIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

async fn run(
    c: tokio::process::Command,
    stdin: Option<&[u8]>,
    what: &str,
) -> Result<Run, MergerError> {
    match tokio::time::timeout(GIT_TIMEOUT, run_to_end(c, stdin)).await {
        Ok(out) => out,
        // The child is killed when its future is dropped (`kill_on_drop`).
        Err(_) => Err(MergerError(format!(
            "git {what} did not finish within {} s",
            GIT_TIMEOUT.as_secs()
        ))),
    }
}

async fn run_to_end(
    mut c: tokio::process::Command,
    stdin: Option<&[u8]>,
) -> Result<Run, MergerError> {
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c
        .spawn()
        .map_err(|e| MergerError(format!("cannot run git: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // Written concurrently with reading the output, so a large input cannot deadlock.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| MergerError(format!("git did not finish: {e}")))?;
    Ok(Run {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// The mirror directory for `repository` under `mirror_dir`: one bare repository per target,
/// named by a hash of its URL so different URLs never share one.
pub(super) fn mirror_path(mirror_dir: &Path, repository: &str) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in repository.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let tail: String = repository
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .take(40)
        .collect();
    mirror_dir.join(format!("{}-{h:016x}.git", tail.trim_end_matches(".git")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse() {
        assert_eq!(
            Identity::parse("Keyway Runway <runway@keyway.invalid>"),
            Some(Identity::default())
        );
        for bad in ["", "no email", "<a@b>", "A <>", "A <a@b", "A <a<b>"] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn commit_objects_parse() {
        let body = b"tree 1111\nparent 2222\nparent 3333\nauthor A U Thor <a@u.example> 1700000000 +0100\ncommitter C <c@example> 1700000001 +0000\n\nsubject\n\nbody\n";
        let c = CommitInfo::parse(body).unwrap();
        assert_eq!(c.tree, "1111");
        assert_eq!(c.parents, ["2222", "3333"]);
        assert_eq!(
            c.author,
            (
                "A U Thor".into(),
                "a@u.example".into(),
                "1700000000 +0100".into()
            )
        );
        assert_eq!(c.message, b"subject\n\nbody\n");
        assert_eq!(CommitInfo::parse(b"parent 1\n\nx"), None);
    }

    #[test]
    fn mirrors_are_named_by_their_url() {
        let a = mirror_path(Path::new("/m"), "file:///srv/pay.git");
        let b = mirror_path(Path::new("/m"), "/srv/pay.git");
        assert_ne!(a, b);
        assert!(
            a.display().to_string().starts_with("/m/pay-"),
            "{}",
            a.display()
        );
        assert_eq!(a, mirror_path(Path::new("/m"), "file:///srv/pay.git"));
    }

    #[test]
    fn urls_in_git_messages_lose_their_password() {
        assert_eq!(
            redact("fatal: unable to access 'https://bot:tok@git.example/x/': 403"),
            "fatal: unable to access 'https://bot:***@git.example/x/': 403"
        );
    }
}
