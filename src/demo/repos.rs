//! The demo's repositories: real bare repositories with some history and change branches of
//! every kind, made with the git command line in a scratch directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::merge_service::uri::ChangeUri;

/// A bare target repository and a working clone to make its change branches in.
pub(crate) struct DemoRepo {
    pub(crate) bare: PathBuf,
    work: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LANG", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Dana Developer")
        .env("GIT_AUTHOR_EMAIL", "dana@example.com")
        .env("GIT_COMMITTER_NAME", "Dana Developer")
        .env("GIT_COMMITTER_EMAIL", "dana@example.com")
        .output()
        .map_err(|e| format!("cannot run git: {e} (the demo needs git 2.38 or newer on PATH)"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl DemoRepo {
    /// `<root>/<name>.git` with `files` committed on `main`, one commit each.
    pub(crate) fn create(
        root: &Path,
        name: &str,
        files: &[(&str, &str)],
    ) -> Result<DemoRepo, String> {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        git(
            root,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &bare.display().to_string(),
            ],
        )?;
        git(
            root,
            &["init", "-q", "-b", "main", &work.display().to_string()],
        )?;
        git(
            &work,
            &["remote", "add", "origin", &bare.display().to_string()],
        )?;
        let repo = DemoRepo { bare, work };
        for (path, text) in files {
            repo.write(path, text)?;
            repo.commit(&format!("Add {path}"))?;
        }
        git(&repo.work, &["push", "-q", "origin", "main"])?;
        Ok(repo)
    }

    fn write(&self, path: &str, text: &str) -> Result<(), String> {
        let file = self.work.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))
    }

    fn commit(&self, message: &str) -> Result<String, String> {
        git(&self.work, &["add", "-A"])?;
        git(&self.work, &["commit", "-q", "-m", message])?;
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// A branch `name` off `base` with one commit per `(path, text, message)`, pushed; the URI
    /// of its tip.
    pub(crate) fn change(
        &self,
        name: &str,
        base: &str,
        commits: &[(&str, &str, &str)],
    ) -> Result<String, String> {
        git(&self.work, &["checkout", "-q", "-B", name, base])?;
        let mut sha = String::new();
        for (path, text, message) in commits {
            self.write(path, text)?;
            sha = self.commit(message)?;
        }
        git(&self.work, &["push", "-q", "-f", "origin", name])?;
        git(&self.work, &["checkout", "-q", "main"])?;
        Ok(ChangeUri::file(
            &self.bare,
            &format!("refs/heads/{name}"),
            &sha,
        ))
    }

    /// Land `commits` on `main` directly (someone else's push).
    pub(crate) fn push_to_main(&self, commits: &[(&str, &str, &str)]) -> Result<(), String> {
        for (path, text, message) in commits {
            self.write(path, text)?;
            self.commit(message)?;
        }
        git(&self.work, &["push", "-q", "origin", "main"]).map(drop)
    }

    /// The commit `rev` of the working clone.
    pub(crate) fn rev(&self, rev: &str) -> Result<String, String> {
        git(&self.work, &["rev-parse", rev])
    }

    /// Delete the repository and its clone.
    pub(crate) fn remove(self) -> Result<(), String> {
        for dir in [&self.bare, &self.work] {
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// `git log --oneline --graph` of the target's `main`.
    pub(crate) fn graph(&self) -> Result<String, String> {
        git(
            &self.bare,
            &["log", "--oneline", "--graph", "--format=%h %s", "main"],
        )
    }
}
