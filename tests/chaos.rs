//! Chaos: the whole merge loop as separate `keyway run` processes (every role, each in two of
//! them) on a redis-server with an append-only file, landing with the git merger on local bare
//! repositories, while role processes are SIGKILLed and restarted and the server is SIGKILLed
//! and restarted on its port and directory. A few hundred batches are trickled in through
//! `keyway::stages::submit::submit`; a seeded fraction of them conflict.
//!
//! At the end: every batch is terminal as seeded (a conflict FAILED, its requests ERROR; the rest
//! SUCCEEDED and LANDED), every change of a succeeded batch is in its target exactly once and no
//! change of a failed one is there at all, every stream holds exactly what the stages publish
//! for that many batches and requests, every consumer group is drained, and no process
//! panicked. The test prints its seed first and a one-line summary last.
//!
//! - `KEYWAY_CHAOS_SEED`: the plan and the kill schedule (timings still vary); default from the
//!   clock.
//! - `KEYWAY_CHAOS_BATCHES` (default 150), `KEYWAY_CHAOS_KILLS` (role process kills, default 4),
//!   `KEYWAY_CHAOS_REDIS_KILLS` (default 2, or a quarter of the process kills if more).
//! - `KEYWAY_CHAOS_KEEP=1` keeps the scratch directory (repositories, config, every process's
//!   log), which is also kept when the test fails.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway::merge_service::uri::ChangeUri;
use keyway::orchestrator::{Batch, BatchState, LandStrategy, RequestState};
use keyway::stages::app;
use keyway::stages::store::Store;
use keyway::stages::submit::{hand_over, submit, NewRequest, SubmitError};
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend};

/// The target queues: name, the config's `default_strategy`, and what `DEFAULT` resolves to.
const QUEUES: [(&str, &str, LandStrategy); 3] = [
    ("q0", "rebase", LandStrategy::Rebase),
    ("q1", "squash-rebase", LandStrategy::SquashRebase),
    ("q2", "merge", LandStrategy::Merge),
];

/// The role processes: every role runs in two of them.
const FLEET: [&[&str]; 5] = [
    &["merge", "runway"],
    &["mergesignal", "conclude", "speculate"],
    &["reconcile"],
    &["runway", "mergesignal"],
    &["merge", "conclude", "speculate", "reconcile"],
];

/// With no batch finishing for this long, the test fails saying what is still pending.
const HANG_GUARD: Duration = Duration::from_secs(90);

/// A submission (with its recovery) that takes longer than this fails the test.
const SUBMIT_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Seed and scale

/// xorshift64*, seeded through splitmix64: small, deterministic, good enough to pick with.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

#[derive(Debug, Clone, Copy)]
struct Scale {
    seed: u64,
    batches: usize,
    role_kills: usize,
    redis_kills: usize,
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

impl Scale {
    fn from_env() -> Scale {
        let seed = env_number("KEYWAY_CHAOS_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
        });
        let batches = env_number("KEYWAY_CHAOS_BATCHES").unwrap_or(150).max(1) as usize;
        let role_kills = env_number("KEYWAY_CHAOS_KILLS").unwrap_or(4) as usize;
        let redis_kills =
            env_number("KEYWAY_CHAOS_REDIS_KILLS").map_or((role_kills / 4).max(2), |n| n as usize);
        Scale {
            seed,
            batches,
            role_kills,
            redis_kills,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The plan: batches of requests of changes, decided before anything runs

/// What a change's one commit sits on.
#[derive(Debug, Clone, Copy)]
enum Parent {
    /// The target's tip when the test starts: the change adds a file of its own.
    Tip,
    /// The tip's parent, whose `conflict.txt` the tip changed: the change changes it too.
    BeforeTip,
    /// The change below it in a stack.
    Change(usize),
}

#[derive(Debug, Clone)]
struct Change {
    number: usize,
    parent: Parent,
}

impl Change {
    fn conflicts(&self) -> bool {
        matches!(self.parent, Parent::BeforeTip)
    }

    fn reference(&self) -> String {
        format!("refs/heads/change/{}", self.number)
    }

    /// The file the change adds (a change that conflicts adds none).
    fn path(&self) -> String {
        format!("changes/{}.txt", self.number)
    }
}

#[derive(Debug, Clone)]
struct PlannedRequest {
    /// Change numbers, bottom of the stack first.
    changes: Vec<usize>,
    strategy: LandStrategy,
}

#[derive(Debug, Clone)]
struct PlannedBatch {
    queue: usize,
    requests: Vec<PlannedRequest>,
    conflicts: bool,
}

struct Plan {
    changes: Vec<Change>,
    batches: Vec<PlannedBatch>,
}

impl Plan {
    /// `batches` batches of one to three requests; a request is one change or, now and then, a
    /// stack of two; about one batch in seven carries a change that conflicts with its target.
    fn new(rng: &mut Rng, batches: usize) -> Plan {
        let strategies = [
            LandStrategy::Rebase,
            LandStrategy::SquashRebase,
            LandStrategy::Merge,
            LandStrategy::Unset,
        ];
        let mut plan = Plan {
            changes: Vec::new(),
            batches: Vec::new(),
        };
        for _ in 0..batches {
            let queue = rng.index(QUEUES.len());
            let size = match rng.below(10) {
                0..=4 => 1,
                5..=7 => 2,
                _ => 3,
            };
            let conflicting = rng.percent(15).then(|| rng.index(size));
            let mut requests = Vec::new();
            for i in 0..size {
                let strategy = strategies[rng.index(strategies.len())];
                let changes = if conflicting == Some(i) {
                    vec![plan.add(Parent::BeforeTip)]
                } else if rng.percent(20) {
                    let bottom = plan.add(Parent::Tip);
                    vec![bottom, plan.add(Parent::Change(bottom))]
                } else {
                    vec![plan.add(Parent::Tip)]
                };
                requests.push(PlannedRequest { changes, strategy });
            }
            plan.batches.push(PlannedBatch {
                queue,
                requests,
                conflicts: conflicting.is_some(),
            });
        }
        plan
    }

    fn add(&mut self, parent: Parent) -> usize {
        let number = self.changes.len();
        self.changes.push(Change { number, parent });
        number
    }

    fn requests(&self) -> usize {
        self.batches.iter().map(|b| b.requests.len()).sum()
    }
}

/// The commits a request adds to its target when it lands: one per change for REBASE and
/// SQUASH_REBASE, the change itself and a merge commit for MERGE.
fn commits_landed(request: &PlannedRequest, queue: usize) -> usize {
    let strategy = match request.strategy {
        LandStrategy::Unset => QUEUES[queue].2,
        s => s,
    };
    let per_change = if strategy == LandStrategy::Merge {
        2
    } else {
        1
    };
    per_change * request.changes.len()
}

// ---------------------------------------------------------------------------------------------
// Repositories

/// The scratch directory; kept when the test fails (or with `KEYWAY_CHAOS_KEEP=1`).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("keyway-chaos-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("KEYWAY_CHAOS_KEEP").is_some() {
            say(&format!("chaos: kept {}", self.0.display()));
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR");
    command
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir, args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One commit in `git fast-import`'s format, with one file written inline.
fn import_commit(
    out: &mut String,
    reference: &str,
    mark: usize,
    from: Option<usize>,
    message: &str,
    files: &[(&str, &str)],
    time: usize,
) {
    let who = format!(
        "Ada Author <ada@example.com> {} +0000",
        1_700_000_000 + time
    );
    out.push_str(&format!(
        "commit {reference}\nmark :{mark}\nauthor {who}\ncommitter {who}\ndata {}\n{message}\n",
        message.len()
    ));
    if let Some(from) = from {
        out.push_str(&format!("from :{from}\n"));
    }
    for (path, text) in files {
        out.push_str(&format!(
            "M 100644 inline {path}\ndata {}\n{text}\n",
            text.len()
        ));
    }
    out.push('\n');
}

const MARK_BEFORE_TIP: usize = 1;
const MARK_TIP: usize = 2;

fn mark_of(change: usize) -> usize {
    10 + change
}

/// A bare repository per queue with `main` at a tip whose parent wrote `conflict.txt`, and a
/// branch per change of that queue, all written by one `git fast-import`. Returns the change
/// URIs by change number.
fn seed_repositories(root: &Path, plan: &Plan) -> HashMap<usize, String> {
    let mut uris = HashMap::new();
    for (q, (name, _, _)) in QUEUES.iter().enumerate() {
        let repo = root.join(format!("{name}.git"));
        git(
            root,
            &["init", "-q", "--bare", "-b", "main", repo.to_str().unwrap()],
        );
        let mine: Vec<&Change> = plan
            .batches
            .iter()
            .filter(|b| b.queue == q)
            .flat_map(|b| &b.requests)
            .flat_map(|r| &r.changes)
            .map(|n| &plan.changes[*n])
            .collect();
        let mut stream = String::new();
        import_commit(
            &mut stream,
            "refs/heads/main",
            MARK_BEFORE_TIP,
            None,
            "before tip",
            &[("README", "chaos target\n"), ("conflict.txt", "base\n")],
            0,
        );
        import_commit(
            &mut stream,
            "refs/heads/main",
            MARK_TIP,
            Some(MARK_BEFORE_TIP),
            "tip",
            &[("conflict.txt", "target\n")],
            1,
        );
        let mut sorted = mine.clone();
        sorted.sort_by_key(|c| c.number);
        for c in &sorted {
            let from = match c.parent {
                Parent::Tip => MARK_TIP,
                Parent::BeforeTip => MARK_BEFORE_TIP,
                Parent::Change(below) => mark_of(below),
            };
            let text = format!("change {}\n", c.number);
            let path = if c.conflicts() {
                "conflict.txt".to_owned()
            } else {
                c.path()
            };
            import_commit(
                &mut stream,
                &c.reference(),
                mark_of(c.number),
                Some(from),
                &format!("change {}", c.number),
                &[(&path, &text)],
                2 + c.number,
            );
        }
        let marks = root.join(format!("{name}.marks"));
        let mut child = git_command(
            &repo,
            &[
                "fast-import",
                "--quiet",
                &format!("--export-marks={}", marks.display()),
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git fast-import runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stream.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "git fast-import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let marks = std::fs::read_to_string(&marks).unwrap();
        let shas: HashMap<usize, &str> = marks
            .lines()
            .filter_map(|l| {
                let (mark, sha) = l.split_once(' ')?;
                Some((mark.strip_prefix(':')?.parse().ok()?, sha))
            })
            .collect();
        for c in mine {
            let sha = shas[&mark_of(c.number)];
            uris.insert(c.number, ChangeUri::file(&repo, &c.reference(), sha));
        }
    }
    uris
}

/// Every stage topic on the stream of its own name, and the git merger on each queue's bare
/// repository (landed in place); the stages' own subscription defaults.
fn write_config(root: &Path) -> PathBuf {
    let mut text = format!(
        "[runway]\nmerger = \"git\"\nmirror_dir = \"{}\"\n",
        root.join("mirrors").display()
    );
    for (name, strategy, _) in QUEUES {
        text.push_str(&format!(
            "\n[runway.queues.{name}]\nrepository = \"{}\"\nbranch = \"main\"\ndefault_strategy = \"{strategy}\"\n",
            root.join(format!("{name}.git")).display()
        ));
    }
    text.push_str("\n[topics]\n");
    for (key, stream) in app::registry().iter() {
        text.push_str(&format!("{key} = \"{stream}\"\n"));
    }
    let path = root.join("keyway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Role processes

struct Worker {
    roles: &'static [&'static str],
    child: Child,
    /// Every incarnation's standard error, in order.
    logs: Vec<PathBuf>,
}

struct Fleet {
    url: String,
    config: PathBuf,
    log_dir: PathBuf,
    workers: Vec<Worker>,
    /// Processes that exited without being told to.
    unexpected: Vec<String>,
}

impl Fleet {
    fn start(url: &str, config: &Path, log_dir: &Path) -> Fleet {
        let mut fleet = Fleet {
            url: url.to_owned(),
            config: config.to_owned(),
            log_dir: log_dir.to_owned(),
            workers: Vec::new(),
            unexpected: Vec::new(),
        };
        for roles in FLEET {
            let (child, log) = fleet.spawn(fleet.workers.len(), 0, roles);
            fleet.workers.push(Worker {
                roles,
                child,
                logs: vec![log],
            });
        }
        fleet
    }

    fn spawn(&self, index: usize, incarnation: usize, roles: &[&str]) -> (Child, PathBuf) {
        let log = self
            .log_dir
            .join(format!("p{index}-{}-{incarnation}.log", roles.join("+")));
        let child = Command::new(env!("CARGO_BIN_EXE_keyway"))
            .arg("run")
            .args(roles)
            .env("REDIS_URL", &self.url)
            .env("KEYWAY_CONFIG", &self.config)
            .env_remove("KEYWAY_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("keyway run starts");
        (child, log)
    }

    fn respawn(&mut self, index: usize) {
        let roles = self.workers[index].roles;
        let incarnation = self.workers[index].logs.len();
        let (child, log) = self.spawn(index, incarnation, roles);
        let worker = &mut self.workers[index];
        worker.child = child;
        worker.logs.push(log);
    }

    fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.child.id()).collect()
    }

    /// SIGKILL worker `index` and wait for it; returns its process id.
    fn kill(&mut self, index: usize) -> u32 {
        let child = &mut self.workers[index].child;
        let _ = child.kill();
        let _ = child.wait();
        child.id()
    }

    /// Restart any worker that exited on its own, noting it.
    fn check(&mut self) {
        for index in 0..self.workers.len() {
            let worker = &mut self.workers[index];
            if let Ok(Some(status)) = worker.child.try_wait() {
                self.unexpected.push(format!(
                    "`keyway run {}` exited on its own with {status} (log {})",
                    worker.roles.join(" "),
                    worker.logs.last().unwrap().display()
                ));
                self.respawn(index);
            }
        }
    }

    /// SIGTERM every worker and wait for each; returns what did not stop cleanly.
    fn terminate(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for worker in &mut self.workers {
            let pid = worker.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        for worker in &mut self.workers {
            let status = wait_exit(&mut worker.child, Duration::from_secs(20));
            match status {
                Some(s) if s.success() => {}
                other => problems.push(format!(
                    "`keyway run {}` did not stop cleanly on SIGTERM: {other:?} (log {})",
                    worker.roles.join(" "),
                    worker.logs.last().unwrap().display()
                )),
            }
        }
        problems
    }

    fn logs(&self) -> impl Iterator<Item = &PathBuf> {
        self.workers.iter().flat_map(|w| &w.logs)
    }

    /// The last lines of each worker's current log, for a failure message.
    fn tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for worker in &self.workers {
            let path = worker.logs.last().unwrap();
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", path.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The chaos schedule

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blow {
    /// SIGKILL a role process and start it again.
    Role,
    /// SIGKILL redis-server and start it again on its port and directory.
    Redis,
}

/// Blows, each due once that many batches are submitted: spread over the middle 80% of the run.
fn schedule(rng: &mut Rng, scale: &Scale) -> Vec<(usize, Blow)> {
    let from = scale.batches / 10;
    let span = (scale.batches * 8 / 10).max(1) as u64;
    let mut blows: Vec<(usize, Blow)> = (0..scale.role_kills)
        .map(|_| Blow::Role)
        .chain((0..scale.redis_kills).map(|_| Blow::Redis))
        .map(|blow| (from + rng.below(span) as usize, blow))
        .collect();
    blows.sort_by_key(|(at, _)| *at);
    blows
}

#[derive(Debug, Default)]
struct Blows {
    role_kills: usize,
    redis_kills: usize,
    /// Kills per role process.
    victims: BTreeMap<String, usize>,
    /// Deliveries the killed role processes held (left for another consumer to reclaim).
    orphaned: usize,
    /// Deliveries in flight when redis-server was killed.
    cut_off: usize,
}

/// Where the chaos thread reads Redis from: the test's runtime and backend.
struct Probe<'a> {
    runtime: &'a tokio::runtime::Handle,
    backend: &'a RedisBackend,
}

/// What the chaos thread shares with the test body.
struct Signals {
    /// Batches submitted so far.
    submitted: AtomicUsize,
    /// Every blow has been dealt (and the server is up again).
    calm: AtomicBool,
    /// The test body is done: stop watching.
    stop: AtomicBool,
}

/// Deal the blows as submission reaches them (each after a short random delay, so it may fall
/// inside a submission), watching the fleet until told to stop.
fn run_chaos(
    mut rng: Rng,
    blows: &[(usize, Blow)],
    fleet: &Mutex<Fleet>,
    server: &Mutex<EmbeddedRedis>,
    probe: Probe<'_>,
    signals: &Signals,
) -> Blows {
    let mut dealt = Blows::default();
    let mut next = 0;
    while !signals.stop.load(Ordering::SeqCst) {
        fleet.lock().unwrap().check();
        let Some(&(at, blow)) = blows.get(next) else {
            signals.calm.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if signals.submitted.load(Ordering::SeqCst) < at {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        next += 1;
        std::thread::sleep(rng.millis(100));
        match blow {
            Blow::Role => {
                // Half the kills hit whichever process holds the most deliveries right now.
                let index = if rng.percent(50) {
                    rng.index(FLEET.len())
                } else {
                    let pids = fleet.lock().unwrap().pids();
                    let mut held = Vec::new();
                    for pid in pids {
                        held.push(probe.runtime.block_on(in_flight(probe.backend, Some(pid))));
                    }
                    (0..held.len()).max_by_key(|i| held[*i]).unwrap_or(0)
                };
                let pid = fleet.lock().unwrap().kill(index);
                dealt.role_kills += 1;
                dealt.orphaned += probe.runtime.block_on(in_flight(probe.backend, Some(pid)));
                *dealt.victims.entry(FLEET[index].join("+")).or_default() += 1;
                std::thread::sleep(rng.millis(500));
                fleet.lock().unwrap().respawn(index);
            }
            Blow::Redis => {
                let down = rng.millis(500);
                let mut server = server.lock().unwrap();
                dealt.cut_off += probe.runtime.block_on(in_flight(probe.backend, None));
                server.kill();
                dealt.redis_kills += 1;
                std::thread::sleep(down);
                server
                    .restart()
                    .unwrap_or_else(|e| panic!("redis-server did not restart: {e}"));
            }
        }
    }
    dealt
}

/// Sets the flag when dropped: stops the chaos thread however the test body ends.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Redis, read directly

async fn command(backend: &RedisBackend, name: &'static str, args: Vec<Value>) -> Value {
    try_command(backend, name, args)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn try_command(
    backend: &RedisBackend,
    name: &'static str,
    args: Vec<Value>,
) -> Result<Value, fred::error::Error> {
    backend
        .client()
        .custom::<Value, Value>(
            CustomCommand::new_static(name, ClusterHash::FirstKey, false),
            args,
        )
        .await
}

/// A reply of field/value pairs as a map by field name.
fn fields(reply: Value) -> HashMap<String, Value> {
    let mut items = reply.into_array().into_iter();
    let mut out = HashMap::new();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        if let Some(k) = k.as_string() {
            out.insert(k, v);
        }
    }
    out
}

fn stream_key(prefix: &str, stream: &str) -> String {
    let base = stream.strip_suffix("_dlq").unwrap_or(stream);
    format!("{prefix}:{{{base}}}:s:{stream}")
}

/// `XINFO STREAM` of `stream`, or `None` when nothing was ever written to it.
async fn stream_info(backend: &RedisBackend, stream: &str) -> Option<HashMap<String, Value>> {
    let key = stream_key(&backend.config().redis.key_prefix, stream);
    match try_command(backend, "XINFO", vec!["STREAM".into(), key.into()]).await {
        Ok(v) => Some(fields(v)),
        Err(e) if e.to_string().contains("no such key") => None,
        Err(e) => panic!("XINFO STREAM {stream}: {e}"),
    }
}

async fn entries_added(backend: &RedisBackend, stream: &str) -> u64 {
    stream_info(backend, stream)
        .await
        .and_then(|info| info.get("entries-added").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// Every stream the stages use and its dead letters.
fn streams() -> Vec<String> {
    let mut out: Vec<String> = app::registry()
        .iter()
        .map(|(_, stream)| stream.to_string())
        .collect();
    let dead: Vec<String> = out.iter().map(|s| format!("{s}_dlq")).collect();
    out.extend(dead);
    out
}

/// Deliveries pending in every group: all of them, or only those of the consumers of process
/// `pid` (a consumer's name starts with `c-<pid>-`).
async fn in_flight(backend: &RedisBackend, pid: Option<u32>) -> usize {
    let prefix = backend.config().redis.key_prefix.clone();
    let mut total = 0;
    for stream in streams() {
        let key = stream_key(&prefix, &stream);
        let Ok(groups) =
            try_command(backend, "XINFO", vec!["GROUPS".into(), key.clone().into()]).await
        else {
            continue;
        };
        for group in groups.into_array() {
            let g = fields(group);
            let Some(pid) = pid else {
                total += g.get("pending").and_then(Value::as_u64).unwrap_or(0) as usize;
                continue;
            };
            let name = g.get("name").and_then(Value::as_string).unwrap_or_default();
            let args = vec!["CONSUMERS".into(), key.clone().into(), name.into()];
            let Ok(consumers) = try_command(backend, "XINFO", args).await else {
                continue;
            };
            for c in consumers.into_array() {
                let c = fields(c);
                let mine = c
                    .get("name")
                    .and_then(Value::as_string)
                    .is_some_and(|n| n.starts_with(&format!("c-{pid}-")));
                if mine {
                    total += c.get("pending").and_then(Value::as_u64).unwrap_or(0) as usize;
                }
            }
        }
    }
    total
}

/// What each consumer group still holds: pending, unread, parked behind a head, due later.
async fn undrained_groups(backend: &RedisBackend) -> Vec<String> {
    let prefix = backend.config().redis.key_prefix.clone();
    let mut out = Vec::new();
    for stream in streams() {
        let Some(info) = stream_info(backend, &stream).await else {
            continue;
        };
        let last = info
            .get("last-generated-id")
            .and_then(Value::as_string)
            .unwrap_or_default();
        let key = stream_key(&prefix, &stream);
        let groups = command(backend, "XINFO", vec!["GROUPS".into(), key.into()]).await;
        for group in groups.into_array() {
            let g = fields(group);
            let name = g.get("name").and_then(Value::as_string).unwrap_or_default();
            let pending = g.get("pending").and_then(Value::as_i64).unwrap_or(-1);
            let delivered = g
                .get("last-delivered-id")
                .and_then(Value::as_string)
                .unwrap_or_default();
            let base = stream.strip_suffix("_dlq").unwrap_or(&stream);
            let part = |p: &str| format!("{prefix}:{{{base}}}:g:{stream}:{name}:{p}");
            let heads = command(backend, "HLEN", vec![part("heads").into()]).await;
            let held = command(backend, "ZCARD", vec![part("held").into()]).await;
            let due = command(backend, "ZCARD", vec![part("due").into()]).await;
            let heads = heads.as_i64().unwrap_or(-1);
            let held = held.as_i64().unwrap_or(-1);
            let due = due.as_i64().unwrap_or(-1);
            if pending != 0 || delivered != last || heads != 0 || held != 0 || due != 0 {
                out.push(format!(
                    "{stream}/{name}: pending={pending} last-delivered={delivered} (stream at {last}) heads={heads} held={held} due={due}"
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Submitting through the library, as a client that survives a Redis restart would

/// Submit `requests`, recovering from a failure the way a sole submitter can: a batch record
/// the failed attempt wrote is found by its number (above `known`, at most the queue's counter)
/// and handed over again (which is idempotent); with none, the submission is repeated. Returns
/// the batch and why attempts failed.
async fn submit_recovering(
    backend: &RedisBackend,
    store: &Store,
    queue: &str,
    requests: &[NewRequest],
    known: u64,
) -> (Batch, Vec<String>) {
    let deadline = Instant::now() + SUBMIT_GUARD;
    let mut failures = Vec::new();
    let mut errors = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "submitting to {queue} did not succeed within {SUBMIT_GUARD:?}: {errors:?}"
        );
        match submit(backend, store, queue, requests).await {
            Ok(batch) => return (batch, failures),
            Err(SubmitError::Invalid(why)) => panic!("the plan made an invalid batch: {why}"),
            Err(e) => {
                errors.push(e.to_string());
                failures.push(e.to_string());
            }
        }
        // Find what the failed attempt wrote, once Redis answers again.
        let written = loop {
            assert!(
                Instant::now() < deadline,
                "Redis did not answer within {SUBMIT_GUARD:?}: {errors:?}"
            );
            match written_batch(backend, store, queue, requests, known).await {
                Ok(found) => break found,
                Err(e) => {
                    errors.push(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let Some(batch) = written else {
            continue;
        };
        loop {
            match hand_over(backend, &batch).await {
                Ok(()) => return (batch, failures),
                Err(e) => errors.push(e.to_string()),
            }
            assert!(
                Instant::now() < deadline,
                "handing {} over did not succeed within {SUBMIT_GUARD:?}: {errors:?}",
                batch.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The batch of `queue` numbered above `known` that holds `requests`, if a failed attempt wrote
/// one.
async fn written_batch(
    backend: &RedisBackend,
    store: &Store,
    queue: &str,
    requests: &[NewRequest],
    known: u64,
) -> Result<Option<Batch>, String> {
    let counter = batch_counter(backend, queue).await?;
    for n in known + 1..=counter {
        let id = format!("{queue}/batch/{n}");
        let Some(batch) = store.batch(&id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let mut uris = Vec::new();
        for r in &batch.contains {
            let request = store.request(r).await.map_err(|e| e.to_string())?;
            uris.push(request.map(|r| r.uris).unwrap_or_default());
        }
        let ours: Vec<Vec<String>> = requests.iter().map(|r| r.uris.clone()).collect();
        assert_eq!(
            uris, ours,
            "{id} is above the last batch submitted to {queue} but is not this submission"
        );
        return Ok(Some(batch));
    }
    Ok(None)
}

/// The last number the queue's batch counter gave out.
async fn batch_counter(backend: &RedisBackend, queue: &str) -> Result<u64, String> {
    let key = format!(
        "{}:st:{{{queue}}}:seq:batch",
        backend.config().redis.key_prefix
    );
    let v = try_command(backend, "GET", vec![key.into()])
        .await
        .map_err(|e| e.to_string())?;
    Ok(v.as_string().and_then(|s| s.parse().ok()).unwrap_or(0))
}

async fn request_counter(backend: &RedisBackend, queue: &str) -> u64 {
    let key = format!(
        "{}:st:{{{queue}}}:seq:request",
        backend.config().redis.key_prefix
    );
    let v = command(backend, "GET", vec![key.into()]).await;
    v.as_string().and_then(|s| s.parse().ok()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The run

struct Submitted {
    /// Batch id per planned batch, in plan order.
    ids: Vec<String>,
    /// Why submission attempts failed (each was recovered).
    failures: Vec<String>,
}

async fn submit_all(
    rng: &mut Rng,
    backend: &RedisBackend,
    store: &Store,
    plan: &Plan,
    uris: &HashMap<usize, String>,
    submitted: &AtomicUsize,
) -> Submitted {
    let mut out = Submitted {
        ids: Vec::new(),
        failures: Vec::new(),
    };
    let mut known = [0u64; QUEUES.len()];
    for (i, planned) in plan.batches.iter().enumerate() {
        tokio::time::sleep(rng.millis(60)).await;
        let queue = QUEUES[planned.queue].0;
        let requests: Vec<NewRequest> = planned
            .requests
            .iter()
            .map(|r| NewRequest {
                uris: r.changes.iter().map(|c| uris[c].clone()).collect(),
                strategy: r.strategy,
            })
            .collect();
        let (batch, failures) =
            submit_recovering(backend, store, queue, &requests, known[planned.queue]).await;
        out.failures.extend(failures);
        known[planned.queue] = batch
            .id
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a batch id ends in its number");
        out.ids.push(batch.id);
        submitted.store(i + 1, Ordering::SeqCst);
    }
    out
}

/// Wait until every batch is terminal with its requests settled, every queue's speculate stage
/// has seen each of its batches, and every group is drained; fail when nothing moves for
/// [`HANG_GUARD`], saying what is pending.
async fn settle(
    backend: &RedisBackend,
    store: &Store,
    ids: &[String],
    fleet: &Mutex<Fleet>,
    signals: &Signals,
    seed: u64,
) {
    let mut open: Vec<&String> = ids.iter().collect();
    let mut last_progress = Instant::now();
    let mut last_pending = String::new();
    loop {
        let before = open.len();
        let mut still = Vec::new();
        for id in open {
            let done = match store.batch(id).await {
                Ok(Some(batch)) if is_terminal(batch.state()) => {
                    let mut settled = true;
                    for r in &batch.contains {
                        match store.request(r).await {
                            Ok(Some(r)) if r.state() != RequestState::Queued => {}
                            _ => settled = false,
                        }
                    }
                    settled
                }
                _ => false,
            };
            if !done {
                still.push(id);
            }
        }
        open = still;
        if open.len() < before {
            last_progress = Instant::now();
        }
        let mut pending: Vec<String> = Vec::new();
        for id in open.iter().take(20) {
            let state = match store.batch(id).await {
                Ok(Some(b)) => b.state().as_str_name().to_owned(),
                Ok(None) => "no record".to_owned(),
                Err(e) => format!("unreadable: {e}"),
            };
            pending.push(format!("{id} {state}"));
        }
        if open.is_empty() {
            let mut by_queue: BTreeMap<&str, usize> = BTreeMap::new();
            for id in ids {
                *by_queue.entry(id.split('/').next().unwrap()).or_default() += 1;
            }
            for (queue, count) in by_queue {
                let seen = store.speculations(queue).await.map_or(0, |s| s.len());
                if seen < count {
                    pending.push(format!("{queue}: speculate saw {seen} of {count} batches"));
                }
            }
            // Redis is read directly only once no blow is due (it is up for good then).
            if signals.calm.load(Ordering::SeqCst) {
                pending.extend(undrained_groups(backend).await);
            } else {
                pending.push("blows still to deal".to_owned());
            }
            if pending.is_empty() {
                return;
            }
            // Draining the last acknowledgements counts as progress.
            let now = pending.join("; ");
            if now != last_pending {
                last_progress = Instant::now();
                last_pending = now;
            }
        }
        if last_progress.elapsed() > HANG_GUARD {
            let tails = fleet.lock().map(|f| f.tails(15)).unwrap_or_default();
            panic!(
                "hang guard (KEYWAY_CHAOS_SEED={seed}): nothing moved for {HANG_GUARD:?}; {} batches not settled; pending: {}\nthe processes' last words:\n{tails}",
                open.len(),
                pending.join("; "),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_terminal(state: BatchState) -> bool {
    matches!(
        state,
        BatchState::Succeeded | BatchState::Failed | BatchState::Cancelled
    )
}

// ---------------------------------------------------------------------------------------------
// The checks

#[derive(Debug, Default)]
struct Findings {
    problems: Vec<String>,
    landed: usize,
    failed: usize,
    duplicates: usize,
    lost: usize,
    /// Landed requests whose record has no revisions: Runway answered a redelivery after its
    /// first answer was lost, and the change was already there.
    replayed: usize,
    /// Request records no batch contains (written by a failed submission attempt).
    orphans: usize,
    dead_letters: BTreeMap<String, u64>,
}

impl Findings {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 200 {
            self.problems.push(text);
        }
    }
}

/// Records against the plan: each batch and request as seeded, with its URIs.
async fn check_records(
    store: &Store,
    backend: &RedisBackend,
    plan: &Plan,
    uris: &HashMap<usize, String>,
    ids: &[String],
    f: &mut Findings,
) {
    let mut contained: HashSet<String> = HashSet::new();
    for (planned, id) in plan.batches.iter().zip(ids) {
        let Some(batch) = store.batch(id).await.unwrap() else {
            f.lost += 1;
            f.problem(format!("{id}: submitted, but there is no record"));
            continue;
        };
        let want = if planned.conflicts {
            BatchState::Failed
        } else {
            BatchState::Succeeded
        };
        if batch.state() != want {
            f.problem(format!(
                "{id}: {} (reason {:?}), seeded to be {}",
                batch.state().as_str_name(),
                batch.failure_reason,
                want.as_str_name()
            ));
        }
        if planned.conflicts
            && !batch
                .failure_reason
                .contains("conflicts with main in conflict.txt")
        {
            f.problem(format!(
                "{id}: failed for another reason than its conflict: {:?}",
                batch.failure_reason
            ));
        }
        match batch.state() {
            BatchState::Succeeded => f.landed += 1,
            _ => f.failed += 1,
        }
        if batch.contains.len() != planned.requests.len() {
            f.problem(format!(
                "{id}: {} requests, {} submitted",
                batch.contains.len(),
                planned.requests.len()
            ));
        }
        for (request_id, pr) in batch.contains.iter().zip(&planned.requests) {
            contained.insert(request_id.clone());
            let Some(request) = store.request(request_id).await.unwrap() else {
                f.lost += 1;
                f.problem(format!("{request_id} of {id}: no record"));
                continue;
            };
            let want_uris: Vec<String> = pr.changes.iter().map(|c| uris[c].clone()).collect();
            if request.uris != want_uris {
                f.problem(format!(
                    "{request_id}: URIs {:?}, submitted {want_uris:?}",
                    request.uris
                ));
            }
            let want = if planned.conflicts {
                RequestState::Error
            } else {
                RequestState::Landed
            };
            if request.state() != want {
                f.problem(format!(
                    "{request_id} of {id}: {} (error {:?}), expected {}",
                    request.state().as_str_name(),
                    request.error,
                    want.as_str_name()
                ));
            }
            if request.state() == RequestState::Landed && request.revisions.is_empty() {
                f.replayed += 1;
            }
        }
    }
    // Request records outside every batch: written by a submission attempt that failed.
    for (queue, _, _) in QUEUES {
        for n in 1..=request_counter(backend, queue).await {
            let id = format!("{queue}/{n}");
            if !contained.contains(&id) && store.request(&id).await.unwrap().is_some() {
                f.orphans += 1;
            }
        }
        // And batches: every one the counter gave out that has a record must be ours.
        let counter = batch_counter(backend, queue).await.unwrap();
        for n in 1..=counter {
            let id = format!("{queue}/batch/{n}");
            if !ids.contains(&id) && store.batch(&id).await.unwrap().is_some() {
                f.problem(format!(
                    "{id} has a record but no submission returned it: it is never handed over"
                ));
            }
        }
    }
}

/// The per-state membership sets: every batch and request is in its own state's set and no
/// other.
async fn check_membership(backend: &RedisBackend, store: &Store, ids: &[String], f: &mut Findings) {
    let prefix = backend.config().redis.key_prefix.clone();
    let batch_states: Vec<&str> = (0..16)
        .filter_map(|i| BatchState::try_from(i).ok())
        .map(|s| s.as_str_name())
        .collect();
    let request_states: Vec<&str> = (0..16)
        .filter_map(|i| RequestState::try_from(i).ok())
        .map(|s| s.as_str_name())
        .collect();
    let mut sets: HashMap<String, Vec<String>> = HashMap::new();
    for (queue, _, _) in QUEUES {
        for (kind, states) in [("batch", &batch_states), ("request", &request_states)] {
            for state in states {
                let key = format!("{prefix}:st:{{{queue}}}:{kind}s:{state}");
                let members = command(backend, "SMEMBERS", vec![key.into()]).await;
                for id in members.into_array().iter().filter_map(Value::as_string) {
                    sets.entry(id).or_default().push(state.to_string());
                }
            }
        }
    }
    for id in ids {
        let Some(batch) = store.batch(id).await.unwrap() else {
            continue;
        };
        let mut records = vec![(id.clone(), batch.state().as_str_name())];
        for r in &batch.contains {
            if let Some(request) = store.request(r).await.unwrap() {
                records.push((r.clone(), request.state().as_str_name()));
            }
        }
        for (id, state) in records {
            let listed = sets.get(&id).cloned().unwrap_or_default();
            if listed != [state] {
                f.problem(format!(
                    "{id} is {state}, but the membership sets list it under {listed:?}"
                ));
            }
        }
    }
}

/// Each target's history against the plan: the tip's parent chain holds every change of a
/// succeeded batch exactly once and nothing of a failed one, with exactly the commits the
/// strategies write, and each landed request's revisions are in it.
async fn check_targets(root: &Path, plan: &Plan, store: &Store, ids: &[String], f: &mut Findings) {
    for (q, (name, _, _)) in QUEUES.iter().enumerate() {
        let repo = root.join(format!("{name}.git"));
        let mut expected_commits = 2;
        let mut expected_files: HashSet<String> = HashSet::new();
        for b in plan.batches.iter().filter(|b| b.queue == q && !b.conflicts) {
            for r in &b.requests {
                expected_commits += commits_landed(r, q);
                expected_files.extend(r.changes.iter().map(|c| plan.changes[*c].path()));
            }
        }
        let commits: usize = git(&repo, &["rev-list", "--count", "main"])
            .parse()
            .unwrap();
        if commits != expected_commits {
            if commits > expected_commits {
                f.duplicates += commits - expected_commits;
            } else {
                f.lost += expected_commits - commits;
            }
            f.problem(format!(
                "{name}: main has {commits} commits, the landed requests make {expected_commits}"
            ));
        }
        let added = git(
            &repo,
            &[
                "log",
                "main",
                "--no-merges",
                "--diff-filter=A",
                "--name-only",
                "--format=",
                "--",
                "changes/",
            ],
        );
        let mut times: HashMap<&str, usize> = HashMap::new();
        for path in added.lines().filter(|l| !l.is_empty()) {
            *times.entry(path).or_default() += 1;
        }
        for (path, n) in &times {
            if *n > 1 {
                f.duplicates += n - 1;
                f.problem(format!("{name}: {path} was added {n} times"));
            }
            if !expected_files.contains(*path) {
                f.problem(format!("{name}: {path} is in main, but its batch failed"));
            }
        }
        for path in &expected_files {
            if !times.contains_key(path.as_str()) {
                f.lost += 1;
                f.problem(format!(
                    "{name}: {path} of a succeeded batch is not in main"
                ));
            }
        }
        let conflict = git(&repo, &["show", "main:conflict.txt"]);
        if conflict != "target" {
            f.problem(format!("{name}: conflict.txt on main is {conflict:?}"));
        }
        let fsck = git_command(&repo, &["fsck", "--no-dangling", "--no-progress"])
            .output()
            .unwrap();
        if !fsck.status.success() {
            f.problem(format!(
                "{name}: git fsck: {}",
                String::from_utf8_lossy(&fsck.stderr)
            ));
        }
        // Every revision a request recorded is a commit of main.
        let history: HashSet<String> = git(&repo, &["rev-list", "main"])
            .lines()
            .map(str::to_owned)
            .collect();
        for id in ids.iter().filter(|id| id.starts_with(&format!("{name}/"))) {
            let Some(batch) = store.batch(id).await.unwrap() else {
                continue;
            };
            for r in &batch.contains {
                let Some(request) = store.request(r).await.unwrap() else {
                    continue;
                };
                for rev in &request.revisions {
                    if !history.contains(rev) {
                        f.problem(format!("{r}: revision {rev} is not on {name}'s main"));
                    }
                }
            }
        }
    }
}

/// What each stream was given, against what the stages publish for this many batches and
/// requests (every publish is idempotent on its id, so a redelivery adds nothing).
async fn check_streams(backend: &RedisBackend, plan: &Plan, ids: &[String], f: &mut Findings) {
    let batches = ids.len() as u64;
    let requests = plan.requests() as u64;
    for stream in streams().iter().filter(|s| s.ends_with("_dlq")) {
        let n = entries_added(backend, stream).await;
        if n > 0 {
            f.dead_letters.insert(stream.clone(), n);
        }
    }
    let answered_by_reconciler = entries_added(backend, "runway-merge_dlq").await;
    let exact = [
        ("submitqueue-merge", batches, "one hand-over per batch"),
        ("runway-merge", batches, "one merge request per batch"),
        ("conclude", batches, "one per finished batch"),
        ("speculate", batches, "one per finished batch"),
        (
            "log",
            2 * requests,
            "landing, then landed or error, per request",
        ),
        ("parked", 0, "nothing an operator must look at"),
        ("merge-conflict-check", 0, "no dry runs asked for"),
        ("merge-conflict-check-signal", 0, "no dry runs asked for"),
    ];
    for (stream, want, why) in exact {
        let got = entries_added(backend, stream).await;
        if got != want {
            if got < want {
                f.lost += (want - got) as usize;
            } else {
                f.duplicates += (got - want) as usize;
            }
            f.problem(format!(
                "{stream}: {got} entries added, expected {want} ({why})"
            ));
        }
    }
    // Runway answers each batch once; the reconciler answers each of Runway's dead letters.
    let signals = entries_added(backend, "merge-signal").await;
    if signals < batches || signals > batches + answered_by_reconciler {
        f.problem(format!(
            "merge-signal: {signals} entries added, expected {batches} answers from Runway plus at most {answered_by_reconciler} from the reconciler"
        ));
    }
}

/// Speculate saw every batch of each queue once; in submission order when nothing went through
/// the dead letters (a queue's batches move through every stage one at a time, in order).
async fn check_speculations(store: &Store, ids: &[String], in_order: bool, f: &mut Findings) {
    for (queue, _, _) in QUEUES {
        let mine: Vec<&String> = ids
            .iter()
            .filter(|id| id.starts_with(&format!("{queue}/")))
            .collect();
        let seen = store.speculations(queue).await.unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        if unique.len() != seen.len() {
            f.duplicates += seen.len() - unique.len();
            f.problem(format!(
                "{queue}: speculate counted a batch twice: {seen:?}"
            ));
        }
        if unique.len() != mine.len() || mine.iter().any(|id| !unique.contains(id)) {
            f.problem(format!(
                "{queue}: speculate saw {} batches, {} were submitted",
                unique.len(),
                mine.len()
            ));
        } else if in_order && seen.iter().zip(&mine).any(|(a, b)| a != *b) {
            f.problem(format!(
                "{queue}: batches finished out of submission order: {seen:?}"
            ));
        }
    }
}

/// Lines of every log that say a thread panicked.
fn panics(fleet: &Fleet) -> Vec<String> {
    let mut out = Vec::new();
    for path in fleet.logs() {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked")) {
            out.push(format!("{}: {line}", path.display()));
        }
    }
    out
}

/// A line on standard error that the test harness does not capture: the seed and the summary
/// show in every run, passing or not.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn the_merge_loop_survives_killed_processes_and_a_killed_redis() {
    let scale = Scale::from_env();
    say(&format!(
        "chaos: KEYWAY_CHAOS_SEED={} batches={} role kills={} redis kills={}",
        scale.seed, scale.batches, scale.role_kills, scale.redis_kills
    ));
    let started = Instant::now();
    let mut rng = Rng::new(scale.seed);
    let plan = Plan::new(&mut rng, scale.batches);
    let blows = schedule(&mut rng, &scale);
    let mut submit_rng = Rng::new(rng.next());
    let chaos_rng = Rng::new(rng.next());

    let scratch = Scratch::new();
    let root = &scratch.0;
    let uris = seed_repositories(root, &plan);
    let config = write_config(root);
    let server = EmbeddedRedis::start(EmbeddedOptions::default()).unwrap();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (backend, _) = runtime
        .block_on(RedisBackend::connect(app::config(&url)))
        .unwrap();
    let store = Store::new(&backend);

    let fleet = Mutex::new(Fleet::start(&url, &config, &root.join("logs")));
    let server = Mutex::new(server);
    let signals = Signals {
        submitted: AtomicUsize::new(0),
        calm: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    };

    let (ids, submit_failures, dealt, submitting) = std::thread::scope(|scope| {
        let probe = Probe {
            runtime: runtime.handle(),
            backend: &backend,
        };
        let chaos = scope.spawn(|| run_chaos(chaos_rng, &blows, &fleet, &server, probe, &signals));
        let stop_chaos = SetOnDrop(&signals.stop);
        let out = runtime.block_on(async {
            let submit_started = Instant::now();
            let out = submit_all(
                &mut submit_rng,
                &backend,
                &store,
                &plan,
                &uris,
                &signals.submitted,
            )
            .await;
            let submitting = submit_started.elapsed();
            settle(&backend, &store, &out.ids, &fleet, &signals, scale.seed).await;
            (out, submitting)
        });
        let (out, submitting) = out;
        drop(stop_chaos);
        let dealt = chaos.join().expect("the chaos thread");
        (out.ids, out.failures, dealt, submitting)
    });

    let mut fleet = fleet.into_inner().unwrap();
    let mut f = Findings::default();
    for p in fleet.terminate() {
        f.problem(p);
    }
    for p in std::mem::take(&mut fleet.unexpected) {
        f.problem(p);
    }
    for p in panics(&fleet) {
        f.problem(p);
    }
    runtime.block_on(async {
        check_records(&store, &backend, &plan, &uris, &ids, &mut f).await;
        check_membership(&backend, &store, &ids, &mut f).await;
        check_targets(root, &plan, &store, &ids, &mut f).await;
        check_streams(&backend, &plan, &ids, &mut f).await;
        let in_order = f.dead_letters.is_empty();
        check_speculations(&store, &ids, in_order, &mut f).await;
    });
    let expected_failed = plan.batches.iter().filter(|b| b.conflicts).count();
    say(&format!(
        "chaos: seed={} batches={} requests={} landed={} failed={} (seeded {expected_failed}) role kills={} redis kills={} submit recoveries={} replayed answers={} orphan requests={} dead letters={:?} duplicates={} lost={} duration={:.1}s",
        scale.seed,
        ids.len(),
        plan.requests(),
        f.landed,
        f.failed,
        dealt.role_kills,
        dealt.redis_kills,
        submit_failures.len(),
        f.replayed,
        f.orphans,
        f.dead_letters,
        f.duplicates,
        f.lost,
        started.elapsed().as_secs_f64()
    ));
    say(&format!(
        "chaos: killed {}: {} deliveries orphaned; {} deliveries in flight when Redis died; submitting took {:.1}s",
        dealt
            .victims
            .iter()
            .map(|(p, n)| format!("{p} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        dealt.orphaned,
        dealt.cut_off,
        submitting.as_secs_f64()
    ));
    if !submit_failures.is_empty() {
        say(&format!(
            "chaos: failed submission attempts (recovered): {}",
            submit_failures.join("; ")
        ));
    }
    drop(fleet);
    drop(server);
    assert!(
        f.problems.is_empty() && f.duplicates == 0 && f.lost == 0,
        "KEYWAY_CHAOS_SEED={} found {} problems:\n{}",
        scale.seed,
        f.problems.len(),
        f.problems.join("\n")
    );
    assert_eq!(
        dealt.role_kills + dealt.redis_kills,
        scale.role_kills + scale.redis_kills,
        "every scheduled blow was dealt"
    );
}
