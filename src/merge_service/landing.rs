//! The git merger: a request checked, then computed as a landing on the target's current tip
//! in an object database (the target's own when it is a bare repository on this machine, else
//! a bare mirror), then applied with one compare-and-swap: `update-ref <new> <old>` in place,
//! or a push with a lease.
//!
//! - **REBASE**: per URI, each commit of `merge-base(tip, sha)..sha` (first-parent chain) is
//!   picked onto the tip as its own commit; picks that become empty are skipped.
//! - **SQUASH_REBASE**: per URI, one commit with the range applied, message
//!   `squash: <step_id> (<label>)`, authored by the pinned commit's author; none if the tree
//!   does not change.
//! - **MERGE**: per URI, a merge commit of the sha onto the tip, unless it is already an
//!   ancestor or the merge would not change the tree.
//! - **PROMOTE**: fast-forward to the sha; a sha already in the target is success with itself
//!   as output; anything else is a conflict.
//!
//! A pick is a three-way merge whose base is the picked commit's parent: `merge-tree
//! --merge-base=<parent>` on git 2.40 and newer. Older git computes the base itself, so there the
//! pick merges a throwaway commit (the current tree on top of the parent) with the picked
//! commit: their best common ancestor is the parent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::git::{
    check_version, local_bare, mirror_path, redact, GitVersion, Identity, MergedTree, Pushed, Repo,
};
use super::merger::{Merger, MergerError, Verdict};
use super::uri::ChangeUri;
use crate::base::mergestrategy::Strategy;
use crate::runway::messagequeue::MergeRequest;

/// How Runway lands on one queue's target.
#[derive(Clone, PartialEq, Eq)]
pub struct GitQueue {
    /// A URL git can fetch and push (`file://`, a path, `ssh://`, `https://`).
    pub repository: String,
    /// The target branch, without `refs/heads/`.
    pub branch: String,
    /// What `DEFAULT` resolves to; must be concrete.
    pub default_strategy: Strategy,
    /// Where the bare mirror lives.
    pub mirror_dir: PathBuf,
    /// Landing attempts before giving up under contention.
    pub max_landing_attempts: u32,
    /// The committer of every commit Runway writes.
    pub committer: Identity,
    /// Refuse a change whose ref has moved on from the pinned sha.
    pub stale_check: bool,
    /// Where changes may come from: repository prefixes (`/srv/git/`, `git://git.example.com/`);
    /// empty means anywhere a change URI can name.
    pub change_sources: Vec<String>,
}

impl std::fmt::Debug for GitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The repository URL may carry credentials.
        f.debug_struct("GitQueue")
            .field("repository", &redact(&self.repository))
            .field("branch", &self.branch)
            .field("default_strategy", &self.default_strategy)
            .field("mirror_dir", &self.mirror_dir)
            .field("max_landing_attempts", &self.max_landing_attempts)
            .field("committer", &self.committer)
            .field("stale_check", &self.stale_check)
            .field("change_sources", &self.change_sources)
            .finish()
    }
}

/// Lands requests with git, per queue.
#[derive(Debug)]
pub struct GitMerger {
    queues: HashMap<String, GitQueue>,
    git: GitVersion,
    /// One lock per target branch: landings on one branch take turns in this process, other
    /// branches land in parallel. Across processes the push's compare-and-swap decides.
    locks: Mutex<HashMap<BranchKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// A target branch: (repository, branch).
type BranchKey = (String, String);

/// A request that cannot be landed as asked: answered FAILED, not retried.
struct Refusal {
    reason: String,
    step: Option<(usize, String)>,
}

impl Refusal {
    fn request(reason: impl Into<String>) -> Refusal {
        Refusal {
            reason: format!("invalid request: {}", reason.into()),
            step: None,
        }
    }

    fn step(i: usize, step_id: &str, why: impl Into<String>) -> Refusal {
        let why = why.into();
        Refusal {
            reason: format!("step {step_id}: {why}"),
            step: Some((i, why)),
        }
    }

    fn verdict(self) -> Verdict {
        Verdict::Failed {
            reason: self.reason,
            step: self.step,
        }
    }
}

/// One step, checked: its id, resolved strategy and parsed URIs.
struct Step {
    id: String,
    strategy: Strategy,
    uris: Vec<ChangeUri>,
}

/// Check `request` against the queue's configuration without touching git.
fn plan(request: &MergeRequest, queue: &GitQueue) -> Result<Vec<Step>, Refusal> {
    if request.steps.is_empty() {
        return Err(Refusal::request("no steps"));
    }
    let mut steps = Vec::with_capacity(request.steps.len());
    let mut provider: Option<String> = None;
    for (i, step) in request.steps.iter().enumerate() {
        let id = if step.step_id.is_empty() {
            format!("#{}", i + 1)
        } else {
            step.step_id.clone()
        };
        let uris = step
            .change
            .as_ref()
            .map(|c| c.uris.as_slice())
            .unwrap_or_default();
        if step.change.is_none() {
            return Err(Refusal::step(i, &id, "invalid request: no change"));
        }
        if uris.is_empty() {
            return Err(Refusal::step(
                i,
                &id,
                "invalid request: the change has no URIs",
            ));
        }
        let strategy = match Strategy::try_from(step.strategy) {
            Ok(Strategy::Default) => queue.default_strategy,
            Ok(s) => s,
            Err(_) => {
                return Err(Refusal::step(
                    i,
                    &id,
                    format!("invalid request: unknown strategy {}", step.strategy),
                ))
            }
        };
        if strategy == Strategy::Default {
            return Err(Refusal::step(
                i,
                &id,
                "invalid request: DEFAULT does not resolve: the queue has no default strategy",
            ));
        }
        let mut parsed = Vec::with_capacity(uris.len());
        for uri in uris {
            let u = ChangeUri::parse(uri).map_err(|e| {
                Refusal::step(i, &id, format!("invalid request: change URI {uri}: {e}"))
            })?;
            if !from_allowed_source(u.repository(), &queue.change_sources) {
                return Err(Refusal::step(
                    i,
                    &id,
                    format!(
                        "invalid request: {uri} is not from a source this queue takes changes from ({})",
                        queue.change_sources.join(", ")
                    ),
                ));
            }
            match &provider {
                Some(p) if p != u.provider() => {
                    return Err(Refusal::step(
                        i,
                        &id,
                        format!(
                            "invalid request: {uri} is on {}, the request's other changes on {p}: one request takes one provider",
                            u.provider()
                        ),
                    ))
                }
                Some(_) => {}
                None => provider = Some(u.provider().to_owned()),
            }
            parsed.push(u);
        }
        steps.push(Step {
            id,
            strategy,
            uris: parsed,
        });
    }
    let promotes = steps.iter().any(|s| s.strategy == Strategy::Promote);
    if promotes && (steps.len() != 1 || steps[0].uris.len() != 1) {
        let at = steps
            .iter()
            .position(|s| s.strategy == Strategy::Promote)
            .unwrap_or(0);
        return Err(Refusal::step(
            at,
            &steps[at].id.clone(),
            "invalid request: PROMOTE needs a request of exactly one step with one URI",
        ));
    }
    Ok(steps)
}

/// Whether `repository` is one of `sources` or inside one (on a path boundary); any repository
/// when there are none.
fn from_allowed_source(repository: &str, sources: &[String]) -> bool {
    sources.is_empty()
        || sources.iter().any(|source| {
            let source = source.trim_end_matches('/');
            repository == source
                || repository
                    .strip_prefix(source)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// A landing computed on one tip: the new tip and each step's outputs.
struct Landing {
    tip: String,
    outputs: Vec<Vec<String>>,
}

impl GitMerger {
    /// A merger for `queues` (queue name → target). Checks that git is new enough.
    pub async fn new(queues: HashMap<String, GitQueue>) -> Result<GitMerger, String> {
        let git = check_version().await?;
        Ok(GitMerger {
            queues,
            git,
            locks: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self, queue: &GitQueue) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks
            .entry((queue.repository.clone(), queue.branch.clone()))
            .or_default()
            .clone()
    }

    async fn land(
        &self,
        request: &MergeRequest,
        queue: &GitQueue,
        commit: bool,
    ) -> Result<Verdict, MergerError> {
        let steps = match plan(request, queue) {
            Ok(steps) => steps,
            Err(refusal) => return Ok(refusal.verdict()),
        };
        let lock = self.lock(queue);
        let _turn = lock.lock().await;
        // A bare repository on this machine is worked on in place and its ref moved with
        // `update-ref`; anything else through a mirror, fetch and a leased push.
        let local = local_bare(&queue.repository);
        let repo = match &local {
            Some(dir) => Repo::existing(dir),
            None => Repo::open(&mirror_path(&queue.mirror_dir, &queue.repository)).await?,
        };
        let tip_ref = match local {
            Some(_) => format!("refs/heads/{}", queue.branch),
            None => format!("refs/keyway/tips/{}", queue.branch),
        };
        let tip_refspec = format!("+refs/heads/{}:{tip_ref}", queue.branch);
        let shown = redact(&queue.repository);
        let mut fetched = false;
        let uris: Vec<&ChangeUri> = steps.iter().flat_map(|s| &s.uris).collect();
        let shas: Vec<&str> = uris.iter().map(|u| u.sha()).collect();
        let missing = repo.missing_commits(&shas).await?;
        if local.is_none() {
            // Changes that live in the target repository come with the first fetch of its tip.
            let mut first: Vec<&str> = vec![&tip_refspec];
            first.extend(
                uris.iter()
                    .filter(|u| u.repository() == queue.repository)
                    .filter(|u| missing.iter().any(|m| m == u.sha()))
                    .map(|u| u.sha()),
            );
            // One of the shas may be unknown there: then the tip is fetched alone below and each
            // change by itself.
            fetched = first.len() > 1 && repo.fetch(&queue.repository, &first).await?.is_ok();
        }
        if let Err(refusal) = fetch_changes(&repo, &steps, queue, &missing).await? {
            return Ok(refusal.verdict());
        }
        let mut not_updated: Option<(String, String)> = None;
        for _ in 0..queue.max_landing_attempts {
            if local.is_none() && !std::mem::take(&mut fetched) {
                if let Err(why) = repo.fetch(&queue.repository, &[&tip_refspec]).await? {
                    return Err(MergerError(format!(
                        "cannot fetch {} from {shown}: {why}",
                        queue.branch
                    )));
                }
            }
            let tip = repo
                .resolve(&tip_ref)
                .await?
                .ok_or_else(|| MergerError(format!("{shown} has no branch {}", queue.branch)))?;
            // The last push was not taken although the branch did not move: not contention.
            if let Some((_, why)) = not_updated.take().filter(|(old, _)| *old == tip) {
                return Err(MergerError(why));
            }
            let landing = match compute(&repo, &steps, &tip, queue, &self.git).await? {
                Ok(landing) => landing,
                Err(refusal) => return Ok(refusal.verdict()),
            };
            if !commit {
                return Ok(Verdict::Succeeded {
                    outputs: vec![Vec::new(); steps.len()],
                });
            }
            if landing.tip == tip {
                return Ok(Verdict::Succeeded {
                    outputs: landing.outputs,
                });
            }
            let moved = match local {
                Some(_) => {
                    let why = format!("keyway: land {}", request.id);
                    repo.update_ref(&tip_ref, &tip, &landing.tip, &why).await?
                }
                None => {
                    repo.push(&queue.repository, &queue.branch, &tip, &landing.tip)
                        .await?
                }
            };
            match moved {
                Pushed::Landed => {
                    return Ok(Verdict::Succeeded {
                        outputs: landing.outputs,
                    })
                }
                Pushed::Moved => not_updated = None,
                Pushed::NotUpdated(why) => not_updated = Some((tip, why)),
            }
        }
        Err(MergerError(format!(
            "exceeded {} landing attempts due to contention on {} of {shown}",
            queue.max_landing_attempts, queue.branch
        )))
    }
}

impl Merger for GitMerger {
    async fn merge(&self, request: &MergeRequest, commit: bool) -> Result<Verdict, MergerError> {
        let Some(queue) = self.queues.get(&request.queue_name) else {
            return Ok(Refusal::request(format!(
                "queue {:?} has no target repository configured",
                request.queue_name
            ))
            .verdict());
        };
        self.land(request, queue, commit).await
    }
}

/// Make every change's commit present in the mirror: by sha, else by its ref. A commit that is
/// still missing while its repository answers is a refusal; an unreachable repository is an
/// error (retried).
async fn fetch_changes(
    repo: &Repo,
    steps: &[Step],
    queue: &GitQueue,
    missing: &[String],
) -> Result<Result<(), Refusal>, MergerError> {
    for (i, step) in steps.iter().enumerate() {
        for uri in &step.uris {
            let source = uri.repository();
            if queue.stale_check {
                match repo.remote_ref(source, uri.reference()).await {
                    Ok(Some(now)) if now != uri.sha() => {
                        return Ok(Err(Refusal::step(
                            i,
                            &step.id,
                            format!(
                                "stale change: {} is now at {now}, not at the queued {}",
                                uri.reference(),
                                uri.sha()
                            ),
                        )))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            if !missing.iter().any(|m| m == uri.sha()) || repo.has_commit(uri.sha()).await? {
                continue;
            }
            let by_sha = repo.fetch(source, &[uri.sha()]).await?;
            if by_sha.is_err() {
                // The objects only: no ref is written, in a mirror or a target worked on in place.
                let _ = repo.fetch(source, &[uri.reference()]).await?;
            }
            if repo.has_commit(uri.sha()).await? {
                continue;
            }
            if let Err(why) = repo.reachable(source).await? {
                return Err(MergerError(format!(
                    "cannot reach {}: {why}",
                    redact(source)
                )));
            }
            return Ok(Err(Refusal::step(
                i,
                &step.id,
                format!(
                    "commit {} not found in {} (nor on {})",
                    uri.sha(),
                    redact(source),
                    uri.reference()
                ),
            )));
        }
    }
    Ok(Ok(()))
}

/// The landing of `steps` on `tip`: pure git object writes, nothing moves.
async fn compute(
    repo: &Repo,
    steps: &[Step],
    tip: &str,
    queue: &GitQueue,
    git: &GitVersion,
) -> Result<Result<Landing, Refusal>, MergerError> {
    let mut cur = tip.to_owned();
    let mut cur_tree = tree_of(repo, &cur).await?;
    let mut outputs = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let mut out = Vec::new();
        for uri in &step.uris {
            let sha = uri.sha();
            let conflict = |paths: Vec<String>| {
                Refusal::step(
                    i,
                    &step.id,
                    format!(
                        "{} conflicts with {} in {}",
                        uri_text(uri),
                        queue.branch,
                        paths.join(", ")
                    ),
                )
            };
            match step.strategy {
                Strategy::Rebase => {
                    // What the change has that the target does not, oldest first.
                    let picks = repo.first_parent_range(&cur, sha).await?;
                    let infos = repo.commits(&picks).await?;
                    for (pick, info) in picks.iter().zip(infos) {
                        // A root commit the target does not have: the histories are unrelated.
                        let Some(parent) = info.parents.first() else {
                            return Ok(Err(unrelated(i, step, uri, queue)));
                        };
                        let merged = if git.merge_base_option {
                            repo.merge_tree_on(Some(parent), &cur, pick, false).await?
                        } else {
                            // The current tree on top of the pick's parent: merging it with the
                            // pick is the pick's change applied to the current tree.
                            let onto = repo
                                .commit_tree(
                                    &cur_tree,
                                    &[parent],
                                    b"pick base\n",
                                    &info.author,
                                    &queue.committer,
                                )
                                .await?;
                            repo.merge_tree(&onto, pick, false).await?
                        };
                        match merged {
                            MergedTree::Conflict(paths) => return Ok(Err(conflict(paths))),
                            MergedTree::Clean(tree) if tree == cur_tree => {}
                            MergedTree::Clean(tree) => {
                                cur = repo
                                    .commit_tree(
                                        &tree,
                                        &[&cur],
                                        &info.message,
                                        &info.author,
                                        &queue.committer,
                                    )
                                    .await?;
                                cur_tree = tree;
                                out.push(cur.clone());
                            }
                        }
                    }
                }
                Strategy::SquashRebase | Strategy::Merge => {
                    let merge = step.strategy == Strategy::Merge;
                    if merge && repo.is_ancestor(sha, &cur).await? {
                        continue;
                    }
                    if !merge && repo.merge_base(&cur, sha).await?.is_none() {
                        return Ok(Err(unrelated(i, step, uri, queue)));
                    }
                    match repo.merge_tree(&cur, sha, merge).await? {
                        MergedTree::Conflict(paths) => return Ok(Err(conflict(paths))),
                        // Nothing new: the change is already there (perhaps landed before under
                        // another strategy).
                        MergedTree::Clean(tree) if tree == cur_tree => {}
                        MergedTree::Clean(tree) => {
                            let pinned = pinned(repo, sha).await?;
                            let (message, parents) = if merge {
                                let message = format!(
                                    "Merge {} ({}) into {}\n\nstep {}\n",
                                    uri.label(),
                                    &sha[..12],
                                    queue.branch,
                                    step.id
                                );
                                (message, vec![cur.as_str(), sha])
                            } else {
                                let message = format!("squash: {} ({})\n", step.id, uri.label());
                                (message, vec![cur.as_str()])
                            };
                            let new = repo
                                .commit_tree(
                                    &tree,
                                    &parents,
                                    message.as_bytes(),
                                    &pinned.author,
                                    &queue.committer,
                                )
                                .await?;
                            cur = new;
                            cur_tree = tree;
                            out.push(cur.clone());
                        }
                    }
                }
                Strategy::Promote => {
                    if repo.is_ancestor(sha, &cur).await? {
                        out.push(sha.to_owned());
                    } else if repo.is_ancestor(&cur, sha).await? {
                        cur = sha.to_owned();
                        cur_tree = tree_of(repo, &cur).await?;
                        out.push(sha.to_owned());
                    } else {
                        return Ok(Err(Refusal::step(
                            i,
                            &step.id,
                            format!(
                                "cannot promote {}: it is not a fast-forward of {}",
                                uri_text(uri),
                                queue.branch
                            ),
                        )));
                    }
                }
                Strategy::Default => {
                    return Err(MergerError("internal: DEFAULT was not resolved".into()))
                }
            }
        }
        outputs.push(out);
    }
    Ok(Ok(Landing { tip: cur, outputs }))
}

fn unrelated(i: usize, step: &Step, uri: &ChangeUri, queue: &GitQueue) -> Refusal {
    Refusal::step(
        i,
        &step.id,
        format!(
            "{} and {} have unrelated histories: use MERGE",
            uri_text(uri),
            queue.branch
        ),
    )
}

fn uri_text(uri: &ChangeUri) -> String {
    format!("{} at {}", uri.reference(), &uri.sha()[..12])
}

async fn pinned(repo: &Repo, sha: &str) -> Result<super::git::CommitInfo, MergerError> {
    repo.commits(&[sha.to_owned()])
        .await?
        .pop()
        .ok_or_else(|| MergerError(format!("commit {sha} vanished")))
}

async fn tree_of(repo: &Repo, commit: &str) -> Result<String, MergerError> {
    Ok(pinned(repo, commit).await?.tree)
}
