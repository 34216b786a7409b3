//! Every git merger case again, with git answering `--version` as 2.39: picks then take the
//! path for git without `merge-tree --merge-base` (a throwaway commit on the pick's parent).
//!
//! The cases are `git_merger.rs` itself, included as a module; its `merger()` calls
//! `crate::before_merger()`, which here puts a `git` that reports 2.39 first on `PATH`.

#[path = "git_merger.rs"]
#[allow(dead_code)]
mod cases;

/// Once per process, before the first merger: a `git` on `PATH` that says it is 2.39 and
/// otherwise runs the real one.
pub(crate) fn before_merger() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let real = std::env::split_paths(&path)
            .map(|dir| dir.join("git"))
            .find(|git| git.is_file())
            .expect("git is on PATH");
        let dir = std::env::temp_dir().join(format!("keyway-old-git-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wrapper = dir.join("git");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --version ] && echo 'git version 2.39.0' && exit 0; done\nexec '{}' \"$@\"\n",
                real.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&wrapper)
            .status()
            .unwrap();
        let mut dirs = vec![dir];
        dirs.extend(std::env::split_paths(&path));
        std::env::set_var("PATH", std::env::join_paths(dirs).unwrap());
    });
}
