//! The `[runway]` section of the runtime config: which merger Runway runs with and, for the git
//! merger, each queue's target.
//!
//! ```toml
//! [runway]
//! merger = "git"                        # or "fake": invented revisions, for tests and demos
//! mirror_dir = "/var/lib/keyway/mirrors" # default for every queue
//! committer = "Keyway Runway <runway@keyway.invalid>"
//!
//! [runway.queues.payments]
//! repository = "ssh://git@git.example.com/payments.git"  # anything git can fetch and push
//! branch = "main"
//! default_strategy = "rebase"           # what DEFAULT resolves to: rebase, squash-rebase, merge, promote
//! max_landing_attempts = 10             # 1..=1000
//! stale_check = false                   # refuse a change whose ref moved on from the pinned sha
//! change_sources = ["git://git.example.com/", "/srv/git/"]  # where changes may come from; default anywhere
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use super::git::Identity;
use super::landing::GitQueue;
use crate::base::mergestrategy::Strategy;

/// Which merger the `runway` role runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergerConfig {
    /// [`super::FakeMerger`].
    Fake,
    /// [`super::GitMerger`] on these queues.
    Git(HashMap<String, GitQueue>),
}

/// The allowed range of `max_landing_attempts`.
pub const LANDING_ATTEMPTS: std::ops::RangeInclusive<i64> = 1..=1000;

/// Read the `[runway]` table; errors name the key (`runway.queues.payments.branch: …`).
pub fn parse(table: &toml::Table) -> Result<MergerConfig, String> {
    let mut merger = None;
    let mut mirror_dir = None;
    let mut committer = Identity::default();
    let mut queues_table = None;
    for (key, value) in table {
        let at = format!("runway.{key}");
        match key.as_str() {
            "merger" => {
                merger = Some(match string(&at, value)? {
                    "git" => "git",
                    "fake" => "fake",
                    other => {
                        return Err(format!(
                            "{at}: expected \"git\" or \"fake\", found {other:?}"
                        ))
                    }
                })
            }
            "mirror_dir" => mirror_dir = Some(PathBuf::from(string(&at, value)?)),
            "committer" => committer = identity(&at, value)?,
            "queues" => {
                queues_table = Some(
                    value
                        .as_table()
                        .ok_or_else(|| format!("{at}: expected a table of queues"))?,
                )
            }
            _ => {
                return Err(format!(
                    "{at}: unknown key (expected merger, mirror_dir, committer, queues)"
                ))
            }
        }
    }
    if merger == Some("fake") {
        return Ok(MergerConfig::Fake);
    }
    let Some(queues_table) = queues_table.filter(|q| !q.is_empty()) else {
        return Err("runway.queues: the git merger needs at least one queue (or set runway.merger = \"fake\")".into());
    };
    let mut queues = HashMap::new();
    for (name, value) in queues_table {
        let at = format!("runway.queues.{name}");
        let t = value
            .as_table()
            .ok_or_else(|| format!("{at}: expected a table"))?;
        queues.insert(
            name.clone(),
            queue(&at, t, mirror_dir.as_ref(), &committer)?,
        );
    }
    Ok(MergerConfig::Git(queues))
}

fn queue(
    at: &str,
    t: &toml::Table,
    mirror_dir: Option<&PathBuf>,
    committer: &Identity,
) -> Result<GitQueue, String> {
    let mut q = GitQueue {
        repository: String::new(),
        branch: String::new(),
        default_strategy: Strategy::Rebase,
        mirror_dir: mirror_dir.cloned().unwrap_or_default(),
        max_landing_attempts: 10,
        committer: committer.clone(),
        stale_check: false,
        change_sources: Vec::new(),
    };
    for (key, value) in t {
        let at = format!("{at}.{key}");
        match key.as_str() {
            "repository" => q.repository = string(&at, value)?.to_owned(),
            "branch" => {
                let b = string(&at, value)?;
                let b = b.strip_prefix("refs/heads/").unwrap_or(b);
                if b.is_empty() || super::uri::check_ref(&format!("refs/heads/{b}")).is_err() {
                    return Err(format!("{at}: {b:?} is not a branch name"));
                }
                q.branch = b.to_owned();
            }
            "default_strategy" => {
                q.default_strategy = match string(&at, value)? {
                    "rebase" => Strategy::Rebase,
                    "squash-rebase" => Strategy::SquashRebase,
                    "merge" => Strategy::Merge,
                    "promote" => Strategy::Promote,
                    other => {
                        return Err(format!(
                            "{at}: expected \"rebase\", \"squash-rebase\", \"merge\" or \"promote\", found {other:?}"
                        ))
                    }
                }
            }
            "mirror_dir" => q.mirror_dir = PathBuf::from(string(&at, value)?),
            "max_landing_attempts" => {
                let n = value
                    .as_integer()
                    .ok_or_else(|| format!("{at}: expected an integer"))?;
                if !LANDING_ATTEMPTS.contains(&n) {
                    return Err(format!(
                        "{at}: {n} is out of range ({}..={})",
                        LANDING_ATTEMPTS.start(),
                        LANDING_ATTEMPTS.end()
                    ));
                }
                q.max_landing_attempts = n as u32;
            }
            "committer" => q.committer = identity(&at, value)?,
            "change_sources" => {
                q.change_sources = value
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
                    .ok_or_else(|| format!("{at}: expected a list of repository prefixes"))?;
                if let Some(bad) = q.change_sources.iter().find(|s| s.trim_end_matches('/').is_empty()) {
                    return Err(format!("{at}: {bad:?} is not a repository prefix"));
                }
            }
            "stale_check" => {
                q.stale_check = value
                    .as_bool()
                    .ok_or_else(|| format!("{at}: expected true or false"))?
            }
            _ => {
                return Err(format!(
                    "{at}: unknown key (expected repository, branch, default_strategy, mirror_dir, max_landing_attempts, committer, stale_check, change_sources)"
                ))
            }
        }
    }
    for (key, missing) in [
        ("repository", q.repository.is_empty()),
        ("branch", q.branch.is_empty()),
        ("mirror_dir", q.mirror_dir.as_os_str().is_empty()),
    ] {
        if missing {
            return Err(format!("{at}.{key} is missing"));
        }
    }
    Ok(q)
}

fn string<'a>(at: &str, value: &'a toml::Value) -> Result<&'a str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("{at}: expected a string"))
}

fn identity(at: &str, value: &toml::Value) -> Result<Identity, String> {
    let text = string(at, value)?;
    Identity::parse(text).ok_or_else(|| format!("{at}: expected `Name <email>`, found {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<MergerConfig, String> {
        let table: toml::Table = text.parse().unwrap();
        parse(table["runway"].as_table().unwrap())
    }

    #[test]
    fn a_git_queue_with_defaults() {
        let c = parse_text(
            "[runway]\nmirror_dir = \"/m\"\n[runway.queues.pay]\nrepository = \"/srv/pay.git\"\nbranch = \"refs/heads/main\"\n",
        )
        .unwrap();
        let MergerConfig::Git(queues) = c else {
            panic!("{c:?}")
        };
        let q = &queues["pay"];
        assert_eq!(q.branch, "main");
        assert_eq!(q.default_strategy, Strategy::Rebase);
        assert_eq!(q.max_landing_attempts, 10);
        assert_eq!(
            q.committer.to_string(),
            "Keyway Runway <runway@keyway.invalid>"
        );
        assert_eq!(q.mirror_dir, PathBuf::from("/m"));
        assert!(!q.stale_check);
    }

    #[test]
    fn the_fake_merger_is_chosen_by_name() {
        assert_eq!(
            parse_text("[runway]\nmerger = \"fake\"\n").unwrap(),
            MergerConfig::Fake
        );
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[runway]\nmirror_dir = \"/m\"\n[runway.queues.pay]\nrepository = \"/r\"\nbranch = \"main\"\n";
        for (extra, says) in [
            (
                "max_landing_attempts = 0",
                "runway.queues.pay.max_landing_attempts: 0 is out of range (1..=1000)",
            ),
            (
                "max_landing_attempts = 9223372036854775807",
                "out of range (1..=1000)",
            ),
            (
                "default_strategy = \"fast\"",
                "runway.queues.pay.default_strategy: expected \"rebase\"",
            ),
            (
                "committer = \"nobody\"",
                "runway.queues.pay.committer: expected `Name <email>`",
            ),
            (
                "stale_check = 1",
                "runway.queues.pay.stale_check: expected true or false",
            ),
            ("colour = \"red\"", "runway.queues.pay.colour: unknown key"),
        ] {
            let e = parse_text(&format!("{base}{extra}\n")).unwrap_err();
            assert!(e.contains(says), "{extra}: {e}");
        }
        let e =
            parse_text("[runway]\n[runway.queues.pay]\nrepository = \"/r\"\nbranch = \"main\"\n")
                .unwrap_err();
        assert_eq!(e, "runway.queues.pay.mirror_dir is missing");
        let e = parse_text("[runway]\nmerger = \"git\"\n").unwrap_err();
        assert!(
            e.starts_with("runway.queues: the git merger needs at least one queue"),
            "{e}"
        );
        for branch in ["main.lock", "a//b", "x/", "a b", "@{u}"] {
            let e = parse_text(&format!(
                "[runway]\nmirror_dir = \"/m\"\n[runway.queues.pay]\nrepository = \"/r\"\nbranch = {branch:?}\n"
            ))
            .unwrap_err();
            assert!(
                e.contains("runway.queues.pay.branch: ") && e.contains("is not a branch name"),
                "{branch}: {e}"
            );
        }
        let sources = parse_text("[runway]\nmirror_dir = \"/m\"\n[runway.queues.pay]\nrepository = \"/r\"\nbranch = \"main\"\nchange_sources = [\"/srv/git/\"]\n").unwrap();
        let MergerConfig::Git(queues) = sources else {
            panic!("{sources:?}")
        };
        assert_eq!(queues["pay"].change_sources, ["/srv/git/"]);
        for bad in [
            "change_sources = \"/srv\"",
            "change_sources = [\"/\"]",
            "change_sources = [1]",
        ] {
            let e = parse_text(&format!(
                "[runway]\nmirror_dir = \"/m\"\n[runway.queues.pay]\nrepository = \"/r\"\nbranch = \"main\"\n{bad}\n"
            ))
            .unwrap_err();
            assert!(
                e.starts_with("runway.queues.pay.change_sources: "),
                "{bad}: {e}"
            );
        }
        let e = parse_text("[runway]\nmerger = \"magic\"\n").unwrap_err();
        assert!(
            e.contains("runway.merger: expected \"git\" or \"fake\""),
            "{e}"
        );
    }
}
