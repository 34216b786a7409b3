//! The whole merge loop, end to end: batches of two requests submitted through
//! `keyway::stages::submit::submit`, merged, landed by Runway's fake merger, signalled,
//! concluded and speculated on, with every role in this process and with every role as a
//! `keyway run` process of its own, against `redis-benchmark` doing raw `XADD`. Each of the
//! three runs on a fresh `redis-server` without AOF; they are interleaved, round by round, in
//! an order that rotates.
//!
//! Run: `cargo bench -p keyway --bench loop` (cargo builds the `keyway` binary for it).
//! `KEYWAY_BENCH_BATCHES` sets the batches (default 2000), `KEYWAY_BENCH_QUEUES` the queues
//! they are spread over (default 16), `KEYWAY_BENCH_ROUNDS` the rounds (default 6); the
//! defaults take a minute or two on two cores. `KEYWAY_BENCH_BIN` names another `keyway`
//! binary for the processes (to compare two builds, each bench binary with its own).
//!
//! What one run of the loop does, on its own server:
//! - The roles start and land one warm-up batch (groups created, scripts loaded); then they
//!   are held (the processes with `SIGSTOP`, the in-process roles stopped) while the batches
//!   are submitted, so they wait as a backlog.
//! - *Saturation*: the roles go (`SIGCONT`, or started again) and drain the backlog.
//!   Batches per second is the backlog over the time from then until the last batch is
//!   concluded; latency is from each batch's submit call, so it mostly measures the wait in
//!   the backlog.
//! - *Half rate*: half as many batches, submitted one by one at half the saturated rate, the
//!   roles running.
//! - *Alone*: 20 batches one at a time, each 100 ms after the last concluded, on the idle
//!   loop.
//!
//! A batch is *concluded* when both its requests have left `QUEUED` (conclude settles them
//! only once the batch is terminal) and its speculate wake-up is recorded; at the end every
//! batch is checked to be `SUCCEEDED` and its requests `LANDED`. The bench learns of both
//! through keyspace notifications (`notify-keyspace-events Khl`): on each write of a request
//! record it reads the record's state, on each push to a queue's `speculations` list the new
//! entries. The time taken is when the notification arrived.
//!
//! Counts and CPU are taken over windows: the submissions, the drain (from the go until the
//! last batch is concluded and no consumer group has anything pending or unread) and the
//! half-rate run (the same, less the submissions' counts measured before).
//! - *Commands*: `INFO commandstats` calls, commands run inside scripts included, less the
//!   bench's own (its probe and its reads of records and lists, all counted as it sends them).
//! - *Client requests*: what clients sent, a script call being one. Redis 7.0 has no
//!   per-client command counter and `commandstats` cannot tell a command sent by a client from
//!   the same command run by a script, so the server keeps a slow log of every command
//!   (`slowlog-log-slower-than 0`) and the bench counts the entries not attributed to a script
//!   nor to itself. That log costs the server about a fifth of its CPU on this loop (its
//!   entries copy every command's arguments, a script's included), so it is kept only in a
//!   counting pass after the timed runs: a backlog of a quarter of the batches submitted and
//!   drained, then an eighth trickled at the half rate. A blocking `XREAD` that times out is
//!   not logged; it is one request a second per subscription at most, and only while idle.
//! - *Redis CPU*: `INFO cpu` `used_cpu_sys + used_cpu_user`.
//! - *Keyway CPU*: in process, this process's CPU (`/proc/self/stat`) less the bench's
//!   observing and main threads (`/proc/self/task/<tid>/stat`); as processes, the roles'
//!   (`/proc/<pid>/stat`).
//!
//! Every ratio is to the baseline of the same round: batches per second to `XADD`s per second,
//! latencies to the same percentile of `XADD`, commands and requests to the one of an `XADD`,
//! Redis CPU to Redis's per `XADD`, Keyway CPU to `redis-benchmark`'s per `XADD`.
//!
//! Neither the timed runs' servers nor the baseline's keep the slow log. The notifications and
//! the reads they trigger (two or three cheap commands per batch) count in Redis CPU but not in
//! the commands.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyway::merge_service::{AnyMerger, FakeMerger};
use keyway::orchestrator::{BatchState, LandStrategy, RequestState};
use keyway::stages::app::{self, Role};
use keyway::stages::store::Store;
use keyway::stages::submit::{submit, NewRequest};
use keyway_runtime::redis::{
    EmbeddedOptions, EmbeddedRedis, RedisBackend, Shutdown, ShutdownTrigger,
};
use keyway_runtime::transport::TransportError;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// The allocator `keyway run` uses, so the in-process roles run as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FAKE: AnyMerger = AnyMerger::Fake(FakeMerger);

/// Batches submitted one at a time on an idle loop, and the pause before each.
const ALONE: usize = 20;
const ALONE_PAUSE: Duration = Duration::from_millis(100);
/// Client requests are counted on a backlog of this share of the batches (and half as many at
/// the half rate), after the timed runs.
const COUNTED_SHARE: usize = 4;

/// `redis-benchmark`: requests, clients, and the payload of each `XADD`.
const BASELINE_REQUESTS: usize = 20_000;
const BASELINE_CLIENTS: usize = 50;
const BASELINE_PAYLOAD: usize = 100;

/// How long any one wait may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(120);

fn env_var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// A plain blocking RESP2 connection, for the bench's probes.

#[derive(Debug, Clone)]
enum Resp {
    Text(String),
    Int(i64),
    Nil,
    List(Vec<Resp>),
    Error(String),
}

impl Resp {
    fn text(&self) -> Option<&str> {
        match self {
            Resp::Text(t) => Some(t),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(n) => Some(*n),
            _ => None,
        }
    }

    fn list(&self) -> &[Resp] {
        match self {
            Resp::List(items) => items,
            _ => &[],
        }
    }

    /// The reply, unless it is an error.
    fn ok(self) -> Resp {
        match self {
            Resp::Error(e) => panic!("redis: {e}"),
            reply => reply,
        }
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Its own address as the server names it (`ip:port`).
    addr: String,
    /// Commands sent.
    sent: u64,
}

fn read_line(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut text = String::new();
    if reader.read_line(&mut text)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    text.truncate(text.trim_end_matches(['\r', '\n']).len());
    Ok(text)
}

fn read_resp(reader: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let head = read_line(reader)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, head.clone());
    let (kind, rest) = head.split_at_checked(1).ok_or_else(bad)?;
    let number = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Resp::Text(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(number()?),
        "$" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Resp::Nil);
            };
            let mut buf = vec![0; len + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(len);
            Resp::Text(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Resp::Nil);
            };
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(read_resp(reader)?);
            }
            Resp::List(items)
        }
        _ => return Err(bad()),
    })
}

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        stream.set_nodelay(true).unwrap();
        let mut conn = Conn {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            addr: String::new(),
            sent: 0,
        };
        let info = conn.call(&["CLIENT", "INFO"]);
        conn.addr = info
            .text()
            .and_then(|t| t.split(' ').find_map(|f| f.strip_prefix("addr=")))
            .expect("CLIENT INFO names the address")
            .to_owned();
        conn
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.writer.write_all(&out).expect("write to redis");
        self.sent += 1;
    }

    fn read(&mut self) -> std::io::Result<Resp> {
        read_resp(&mut self.reader)
    }

    fn call(&mut self, args: &[&str]) -> Resp {
        self.send(args);
        self.read().expect("read from redis")
    }

    /// `INFO <sections>` as `field → value`.
    fn info(&mut self, sections: &[&str]) -> BTreeMap<String, String> {
        let mut args = vec!["INFO"];
        args.extend_from_slice(sections);
        let reply = self.call(&args).ok();
        reply
            .text()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Log every command from now on (`true`), or none (`false`), and forget what was logged.
    fn log_every_command(&mut self, on: bool) {
        let threshold = if on { "0" } else { "-1" };
        self.call(&["CONFIG", "SET", "slowlog-log-slower-than", threshold])
            .ok();
        self.call(&["SLOWLOG", "RESET"]).ok();
    }

    /// The client the slow log names for commands run inside a script.
    fn script_peer(&mut self) -> String {
        self.log_every_command(true);
        self.call(&["EVAL", "return redis.call('PING')", "0"]).ok();
        let log = self.call(&["SLOWLOG", "GET", "-1"]).ok();
        self.log_every_command(false);
        log.list()
            .iter()
            .find(|e| {
                e.list()
                    .get(3)
                    .and_then(|a| a.list().first())
                    .and_then(Resp::text)
                    .is_some_and(|c| c.eq_ignore_ascii_case("ping"))
            })
            .and_then(|e| e.list().get(4)?.text())
            .expect("the slow log shows the PING inside the script")
            .to_owned()
    }

    /// Slow-log entries since the last `SLOWLOG RESET` sent by a client other than `not`.
    fn client_requests(&mut self, script: &str, not: &[String]) -> u64 {
        let log = self.call(&["SLOWLOG", "GET", "-1"]).ok();
        log.list()
            .iter()
            .filter(|e| {
                e.list()
                    .get(4)
                    .and_then(Resp::text)
                    .is_some_and(|peer| peer != script && !not.iter().any(|n| n == peer))
            })
            .count() as u64
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc.

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Fields of a `stat` file after the command name: `[0]` is field 3 (state).
fn stat_fields(path: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let after = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

/// utime + stime (fields 14 and 15) of a `stat` file, in seconds.
fn cpu_of(path: &str) -> f64 {
    let f = stat_fields(path);
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / clock_ticks()
}

/// cutime + cstime (fields 16 and 17) of this process: children it has waited for.
fn children_cpu() -> f64 {
    let f = stat_fields("/proc/self/stat");
    (f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0)) as f64 / clock_ticks()
}

fn thread_id() -> String {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Watching the loop conclude batches.

#[derive(Default)]
struct Seen {
    /// Requests seen out of `QUEUED`, when.
    settled: HashMap<String, Instant>,
    /// Batches seen in a `speculations` list, when.
    speculated: HashMap<String, Instant>,
}

/// A thread of its own that follows keyspace notifications of the stages' records.
struct Observer {
    seen: Arc<Mutex<Seen>>,
    /// Commands its probe sent.
    sent: Arc<AtomicU64>,
    tid: String,
    /// Its connections' addresses.
    addrs: Vec<String>,
    thread: std::thread::JoinHandle<()>,
}

impl Observer {
    fn start(port: u16, prefix: &str) -> Observer {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let pattern = format!("__keyspace@0__:{prefix}:st:*");
        let (s, n) = (seen.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut sub = Conn::open(port);
            let mut probe = Conn::open(port);
            sub.send(&["PSUBSCRIBE", &pattern]);
            sub.read().expect("PSUBSCRIBE answers");
            tx.send((thread_id(), vec![sub.addr.clone(), probe.addr.clone()]))
                .unwrap();
            let mut lengths: HashMap<String, usize> = HashMap::new();
            // Until the server goes away. Notifications already read together are answered
            // with one pipeline of reads, so the observer keeps up at saturation.
            while let Ok(first) = sub.read() {
                let at = Instant::now();
                let mut messages = vec![first];
                while !sub.reader.buffer().is_empty() {
                    match sub.read() {
                        Ok(m) => messages.push(m),
                        Err(_) => return,
                    }
                }
                // Request keys to read the state of, and `speculations` lists to read on.
                let mut requests: Vec<String> = Vec::new();
                let mut lists: Vec<String> = Vec::new();
                for message in &messages {
                    let items = message.list();
                    let (Some(channel), Some(event)) = (
                        items.get(2).and_then(Resp::text),
                        items.get(3).and_then(Resp::text),
                    ) else {
                        continue;
                    };
                    let Some(key) = channel.strip_prefix("__keyspace@0__:") else {
                        continue;
                    };
                    let wanted = match event {
                        "hset" => key.contains(":request:").then_some(&mut requests),
                        "rpush" => key.ends_with(":speculations").then_some(&mut lists),
                        _ => None,
                    };
                    if let Some(keys) = wanted.filter(|k| !k.iter().any(|k| k == key)) {
                        keys.push(key.to_owned());
                    }
                }
                requests.retain(|key| {
                    let (_, id) = key.split_once(":request:").unwrap();
                    !s.lock().unwrap().settled.contains_key(id)
                });
                for key in &requests {
                    probe.send(&["HGET", key, "s"]);
                }
                for key in &lists {
                    let from = lengths.get(key).copied().unwrap_or(0).to_string();
                    probe.send(&["LRANGE", key, &from, "-1"]);
                }
                n.fetch_add((requests.len() + lists.len()) as u64, Ordering::Relaxed);
                let Ok(states) = (0..requests.len())
                    .map(|_| probe.read())
                    .collect::<Result<Vec<_>, _>>()
                else {
                    return;
                };
                let Ok(added) = (0..lists.len())
                    .map(|_| probe.read())
                    .collect::<Result<Vec<_>, _>>()
                else {
                    return;
                };
                let mut seen = s.lock().unwrap();
                for (key, state) in requests.iter().zip(states) {
                    let (_, id) = key.split_once(":request:").unwrap();
                    let queued = RequestState::Queued.as_str_name();
                    if state.text().is_some_and(|s| s != queued) {
                        seen.settled.insert(id.to_owned(), at);
                    }
                }
                for (key, added) in lists.iter().zip(added) {
                    *lengths.entry(key.clone()).or_default() += added.list().len();
                    for batch in added.list().iter().filter_map(Resp::text) {
                        seen.speculated.entry(batch.to_owned()).or_insert(at);
                    }
                }
            }
        });
        let (tid, addrs) = rx.recv().expect("the observer starts");
        Observer {
            seen,
            sent,
            tid,
            addrs,
            thread,
        }
    }

    fn cpu(&self) -> f64 {
        cpu_of(&format!("/proc/self/task/{}/stat", self.tid))
    }

    /// When `batch` was concluded, if it was.
    fn concluded(&self, batch: &Submitted) -> Option<Instant> {
        let seen = self.seen.lock().unwrap();
        let mut at = *seen.speculated.get(&batch.id)?;
        for r in &batch.requests {
            at = at.max(*seen.settled.get(r)?);
        }
        Some(at)
    }

    /// Wait until every batch of `batches` is concluded; returns when each was.
    fn wait(&self, batches: &[Submitted], roles: &mut Roles) -> Vec<Instant> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let done: Vec<Option<Instant>> = batches.iter().map(|b| self.concluded(b)).collect();
            if done.iter().all(Option::is_some) {
                return done.into_iter().flatten().collect();
            }
            if Instant::now() > deadline {
                let left = done.iter().filter(|d| d.is_none()).count();
                roles.fail(&format!(
                    "{left} of {} batches not concluded",
                    batches.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Submitting.

struct Submitted {
    id: String,
    requests: Vec<String>,
    at: Instant,
}

fn uri(n: usize) -> String {
    format!("file:///srv/loop.git/refs%2Fheads%2Fx/{n:040x}")
}

fn queue(i: usize) -> String {
    format!("q{i:03}")
}

async fn submit_one(backend: &RedisBackend, store: &Store, queue: &str, n: usize) -> Submitted {
    let requests = [
        NewRequest {
            uris: vec![uri(2 * n)],
            strategy: LandStrategy::Rebase,
        },
        NewRequest {
            uris: vec![uri(2 * n + 1)],
            strategy: LandStrategy::SquashRebase,
        },
    ];
    let at = Instant::now();
    let batch = submit(backend, store, queue, &requests)
        .await
        .expect("submit");
    Submitted {
        id: batch.id,
        requests: batch.contains,
        at,
    }
}

/// Batches `first..first + count` over `queues` queues (batch `i` on queue `i % queues`), one
/// submitter per queue.
async fn seed(
    backend: &RedisBackend,
    store: &Store,
    first: usize,
    count: usize,
    queues: usize,
) -> Vec<Submitted> {
    let mut tasks = JoinSet::new();
    for q in 0..queues {
        let (backend, store) = (backend.clone(), store.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (first + q..first + count).step_by(queues) {
                out.push(submit_one(&backend, &store, &queue(q), i).await);
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all
}

/// Batches `first..first + count`, one every `1 / rate` seconds, each submitted as it is due.
async fn trickle(
    backend: &RedisBackend,
    store: &Store,
    first: usize,
    count: usize,
    queues: usize,
    rate: f64,
) -> Vec<Submitted> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for k in 0..count {
        tokio::time::sleep_until(start + interval.mul_f64(k as f64)).await;
        let (backend, store) = (backend.clone(), store.clone());
        let i = first + k;
        tasks.spawn(async move { submit_one(&backend, &store, &queue(i % queues), i).await });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.push(done.unwrap());
    }
    all
}

// ---------------------------------------------------------------------------------------------
// The roles, in this process or as processes.

enum Roles {
    InProcess {
        backend: RedisBackend,
        running: Option<(ShutdownTrigger, JoinSet<Result<(), TransportError>>)>,
    },
    Processes {
        children: Vec<(Child, PathBuf)>,
    },
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {name} {}", child.id());
}

impl Roles {
    fn start_in_process(rt: &Runtime, url: &str) -> Roles {
        let (backend, _) = rt
            .block_on(RedisBackend::connect(app::config(url)))
            .expect("connect");
        let mut roles = Roles::InProcess {
            backend,
            running: None,
        };
        roles.resume(rt);
        roles
    }

    fn start_processes(url: &str, bin: &Path, config: &Path, logs: &Path) -> Roles {
        let children = Role::ALL
            .iter()
            .map(|role| {
                let log = logs.join(format!("{}.log", role.name()));
                let child = Command::new(bin)
                    .arg("run")
                    .arg(role.name())
                    .env("REDIS_URL", url)
                    .env("KEYWAY_CONFIG", config)
                    .env("KEYWAY_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{} run starts: {e}", bin.display()));
                (child, log)
            })
            .collect();
        Roles::Processes { children }
    }

    /// Hold the roles: nothing is consumed until [`Roles::resume`].
    fn pause(&mut self, rt: &Runtime) {
        match self {
            Roles::InProcess { running, .. } => {
                let (trigger, mut tasks) = running.take().expect("running");
                trigger.trigger();
                rt.block_on(async {
                    while let Some(done) = tasks.join_next().await {
                        done.unwrap().unwrap();
                    }
                });
            }
            Roles::Processes { children } => {
                for (child, _) in children.iter() {
                    signal(child, "-STOP");
                }
            }
        }
    }

    fn resume(&mut self, rt: &Runtime) {
        match self {
            Roles::InProcess { backend, running } => {
                let (trigger, shutdown) = Shutdown::new();
                let _entered = rt.enter();
                let tasks = app::start(backend, &Role::ALL, &FAKE, &shutdown);
                *running = Some((trigger, tasks));
            }
            Roles::Processes { children } => {
                for (child, _) in children.iter() {
                    signal(child, "-CONT");
                }
            }
        }
    }

    /// CPU the roles used so far, in seconds.
    fn cpu(&self, observer: &Observer, main_tid: &str) -> f64 {
        match self {
            Roles::InProcess { .. } => own_cpu(observer, main_tid),
            Roles::Processes { children } => children
                .iter()
                .map(|(c, _)| cpu_of(&format!("/proc/{}/stat", c.id())))
                .sum(),
        }
    }

    fn stop(self, rt: &Runtime) {
        match self {
            Roles::InProcess { running, .. } => {
                if let Some((trigger, mut tasks)) = running {
                    trigger.trigger();
                    rt.block_on(async {
                        while let Some(done) = tasks.join_next().await {
                            done.unwrap().unwrap();
                        }
                    });
                }
            }
            Roles::Processes { children } => {
                for (child, _) in &children {
                    signal(child, "-TERM");
                }
                for (mut child, log) in children {
                    let status = child.wait().unwrap();
                    assert!(
                        status.success(),
                        "a worker exited with {status}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
    }

    /// Give up, with what the processes said.
    fn fail(&mut self, why: &str) -> ! {
        let mut logs = String::new();
        if let Roles::Processes { children } = self {
            for (child, log) in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
                logs.push_str(&std::fs::read_to_string(log).unwrap_or_default());
            }
        }
        panic!("{why}; the workers said:\n{logs}");
    }
}

/// This process's CPU less the observer's and the main thread's, in seconds.
fn own_cpu(observer: &Observer, main_tid: &str) -> f64 {
    cpu_of("/proc/self/stat") - observer.cpu() - cpu_of(&format!("/proc/self/task/{main_tid}/stat"))
}

// ---------------------------------------------------------------------------------------------
// Windows.

/// Counters at one moment.
struct Mark {
    /// Commands the probe and the observer had sent before the `INFO` taking this mark.
    sent: u64,
    commands: u64,
    redis_cpu: f64,
    roles_cpu: f64,
    own_cpu: f64,
}

fn mark(probe: &mut Conn, observer: &Observer, roles: &Roles, main_tid: &str) -> Mark {
    let sent = probe.sent + observer.sent.load(Ordering::Relaxed);
    let info = probe.info(&["cpu", "commandstats"]);
    let commands = info
        .iter()
        .filter(|(k, _)| k.starts_with("cmdstat_"))
        .filter_map(|(_, v)| {
            v.split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let cpu = |name: &str| {
        info.get(name)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Mark {
        sent,
        commands,
        redis_cpu: cpu("used_cpu_sys") + cpu("used_cpu_user"),
        roles_cpu: roles.cpu(observer, main_tid),
        own_cpu: own_cpu(observer, main_tid),
    }
}

/// Per batch, over a window.
#[derive(Clone, Copy, Default)]
struct Costs {
    commands: f64,
    requests: f64,
    /// Milliseconds.
    redis_cpu: f64,
    keyway_cpu: f64,
}

/// The costs between two marks, per batch; `own` takes Keyway's CPU from this process.
fn costs(a: &Mark, b: &Mark, batches: usize, own: bool) -> Costs {
    let per = batches as f64;
    let keyway = if own {
        b.own_cpu - a.own_cpu
    } else {
        b.roles_cpu - a.roles_cpu
    };
    Costs {
        commands: (b.commands - a.commands).saturating_sub(b.sent - a.sent) as f64 / per,
        requests: 0.0,
        redis_cpu: (b.redis_cpu - a.redis_cpu) * 1000.0 / per,
        keyway_cpu: keyway * 1000.0 / per,
    }
}

/// Wait until no consumer group has anything pending or unread.
fn quiesce(probe: &mut Conn, prefix: &str, roles: &mut Roles) {
    let keys: Vec<String> = app::registry()
        .iter()
        .flat_map(|(_, stream)| {
            [
                format!("{prefix}:{{{stream}}}:s:{stream}"),
                format!("{prefix}:{{{stream}}}:s:{stream}_dlq"),
            ]
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    'poll: loop {
        for key in &keys {
            for group in probe.call(&["XINFO", "GROUPS", key]).list() {
                let fields = group.list();
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|kv| kv[0].text() == Some(name))
                        .and_then(|kv| kv.get(1)?.int())
                };
                if field("pending") != Some(0) || field("lag") != Some(0) {
                    if Instant::now() > deadline {
                        roles.fail(&format!("{key} still has work"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue 'poll;
                }
            }
        }
        return;
    }
}

/// Every batch succeeded and every request landed.
fn verify(probe: &mut Conn, prefix: &str, batches: &[Submitted]) {
    for b in batches {
        let q = b.id.split('/').next().unwrap();
        let state = probe.call(&["HGET", &format!("{prefix}:st:{{{q}}}:batch:{}", b.id), "s"]);
        assert_eq!(
            state.text(),
            Some(BatchState::Succeeded.as_str_name()),
            "{}",
            b.id
        );
        for r in &b.requests {
            let state = probe.call(&["HGET", &format!("{prefix}:st:{{{q}}}:request:{r}"), "s"]);
            assert_eq!(
                state.text(),
                Some(RequestState::Landed.as_str_name()),
                "{r}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One run of each kind.

fn server() -> EmbeddedRedis {
    EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        extra_args: [
            "--notify-keyspace-events",
            "Khl",
            "--slowlog-log-slower-than",
            "-1",
            "--slowlog-max-len",
            "100000000",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .expect("redis-server starts")
}

/// p50, p99 and max, in milliseconds.
#[derive(Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

fn latency(batches: &[Submitted], concluded: &[Instant]) -> Latency {
    let mut ms: Vec<f64> = batches
        .iter()
        .zip(concluded)
        .map(|(b, c)| c.saturating_duration_since(b.at).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        max: ms[ms.len() - 1],
    }
}

struct Baseline {
    rate: f64,
    latency: Latency,
    /// Per XADD, in milliseconds.
    redis_cpu: f64,
    client_cpu: f64,
}

fn baseline() -> Baseline {
    let server = server();
    let mut probe = Conn::open(server.port());
    let info = |probe: &mut Conn| {
        let info = probe.info(&["cpu"]);
        let cpu = |name: &str| {
            info.get(name)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        cpu("used_cpu_sys") + cpu("used_cpu_user")
    };
    let (redis_before, client_before) = (info(&mut probe), children_cpu());
    let out = Command::new("redis-benchmark")
        .args(["-p", &server.port().to_string(), "--csv"])
        .args(["-n", &BASELINE_REQUESTS.to_string()])
        .args(["-c", &BASELINE_CLIENTS.to_string()])
        .args([
            "XADD",
            "bench",
            "*",
            "payload",
            &"x".repeat(BASELINE_PAYLOAD),
        ])
        .output()
        .expect("redis-benchmark runs (Debian package redis-tools)");
    let (redis_after, client_after) = (info(&mut probe), children_cpu());
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row: Vec<f64> = text
        .lines()
        .find(|l| l.starts_with("\"XADD"))
        .unwrap_or_else(|| panic!("cannot read redis-benchmark output: {text}"))
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    let per = BASELINE_REQUESTS as f64;
    Baseline {
        rate: row[0],
        latency: Latency {
            p50: row[3],
            p99: row[5],
            max: row[6],
        },
        redis_cpu: (redis_after - redis_before) * 1000.0 / per,
        client_cpu: (client_after - client_before) * 1000.0 / per,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    InProcess,
    Processes,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::InProcess => "every role in this process",
            Mode::Processes => "every role a `keyway run` process",
        }
    }
}

struct LoopRun {
    rate: f64,
    saturated: Latency,
    saturated_costs: Costs,
    half_rate: f64,
    half: Latency,
    half_costs: Costs,
    /// One batch at a time on an idle loop.
    single: Latency,
    submit_costs: Costs,
}

struct Setup {
    batches: usize,
    queues: usize,
    bin: PathBuf,
    config: PathBuf,
    logs: PathBuf,
    main_tid: String,
}

fn run_loop(mode: Mode, rt: &Runtime, setup: &Setup) -> LoopRun {
    let (n, q) = (setup.batches, setup.queues);
    let server = server();
    let url = server.url();
    let mut probe = Conn::open(server.port());
    let script_peer = probe.script_peer();
    let (submitter, _) = rt
        .block_on(RedisBackend::connect(app::config(&url)))
        .expect("connect");
    let prefix = submitter.config().redis.key_prefix.clone();
    let store = Store::new(&submitter);
    let observer = Observer::start(server.port(), &prefix);
    let mut mine = observer.addrs.clone();
    mine.push(probe.addr.clone());

    let mut roles = match mode {
        Mode::InProcess => Roles::start_in_process(rt, &url),
        Mode::Processes => Roles::start_processes(&url, &setup.bin, &setup.config, &setup.logs),
    };
    let warm =
        rt.block_on(async { vec![submit_one(&submitter, &store, "warm", usize::MAX / 4).await] });
    observer.wait(&warm, &mut roles);
    quiesce(&mut probe, &prefix, &mut roles);
    roles.pause(rt);
    let main_tid = &setup.main_tid;

    // The backlog.
    let m0 = mark(&mut probe, &observer, &roles, main_tid);
    let backlog = rt.block_on(seed(&submitter, &store, 0, n, q));
    let m1 = mark(&mut probe, &observer, &roles, main_tid);
    let mut submit_costs = costs(&m0, &m1, n, true);

    // Saturation: the roles drain it.
    let m2 = mark(&mut probe, &observer, &roles, main_tid);
    let go = Instant::now();
    roles.resume(rt);
    let concluded = observer.wait(&backlog, &mut roles);
    let last = concluded.iter().max().copied().unwrap();
    quiesce(&mut probe, &prefix, &mut roles);
    let m3 = mark(&mut probe, &observer, &roles, main_tid);
    let mut saturated_costs = costs(&m2, &m3, n, false);
    let rate = n as f64 / last.duration_since(go).as_secs_f64();
    let saturated = latency(&backlog, &concluded);
    verify(&mut probe, &prefix, &backlog);

    // Half the rate, submitted as it goes.
    let count = (n / 2).max(1);
    let half_rate = rate / 2.0;
    let m4 = mark(&mut probe, &observer, &roles, main_tid);
    let trickled = rt.block_on(trickle(&submitter, &store, n, count, q, half_rate));
    let concluded = observer.wait(&trickled, &mut roles);
    quiesce(&mut probe, &prefix, &mut roles);
    let m5 = mark(&mut probe, &observer, &roles, main_tid);
    let both = costs(&m4, &m5, count, false);
    let mut half_costs = Costs {
        commands: both.commands - submit_costs.commands,
        ..Costs::default()
    };
    let half = latency(&trickled, &concluded);
    verify(&mut probe, &prefix, &trickled);

    // One batch at a time on an idle loop: each submitted a while after the last concluded.
    let mut next = n + count;
    let mut alone = Vec::new();
    let mut alone_concluded = Vec::new();
    for _ in 0..ALONE {
        std::thread::sleep(ALONE_PAUSE);
        let one = rt.block_on(submit_one(&submitter, &store, "alone", next));
        next += 1;
        let done = observer.wait(std::slice::from_ref(&one), &mut roles);
        alone.push(one);
        alone_concluded.extend(done);
    }
    let single = latency(&alone, &alone_concluded);
    verify(&mut probe, &prefix, &alone);

    // Client requests, counted apart: the slow log that tells a client's commands from a
    // script's costs the server about a fifth of its CPU on this loop, so the runs above go
    // without it and a smaller copy of the first two runs counts with it.
    let (counted, counted_half) = ((n / COUNTED_SHARE).max(2), (n / COUNTED_SHARE / 2).max(1));
    roles.pause(rt);
    probe.log_every_command(true);
    let backlog = rt.block_on(seed(&submitter, &store, next, counted, q));
    let submitted = probe.client_requests(&script_peer, &mine);
    submit_costs.requests = submitted as f64 / counted as f64;
    probe.log_every_command(true);
    roles.resume(rt);
    observer.wait(&backlog, &mut roles);
    quiesce(&mut probe, &prefix, &mut roles);
    saturated_costs.requests = probe.client_requests(&script_peer, &mine) as f64 / counted as f64;
    verify(&mut probe, &prefix, &backlog);
    probe.log_every_command(true);
    let trickled = rt.block_on(trickle(
        &submitter,
        &store,
        next + counted,
        counted_half,
        q,
        half_rate,
    ));
    observer.wait(&trickled, &mut roles);
    quiesce(&mut probe, &prefix, &mut roles);
    half_costs.requests = probe.client_requests(&script_peer, &mine) as f64 / counted_half as f64
        - submit_costs.requests;
    verify(&mut probe, &prefix, &trickled);
    probe.log_every_command(false);

    roles.stop(rt);
    drop(submitter);
    drop(probe);
    drop(server);
    observer.thread.join().unwrap();
    LoopRun {
        rate,
        saturated,
        saturated_costs,
        half_rate,
        half,
        half_costs,
        single,
        submit_costs,
    }
}

// ---------------------------------------------------------------------------------------------
// Report.

/// min, median, max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Three significant digits or so, without an exponent.
fn num(v: f64) -> String {
    match v.abs() {
        a if !a.is_finite() => "n/a".into(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// A row: the values of each round and, when there is one, their ratios to the baseline of
/// the same round.
fn row(name: &str, unit: &str, values: &[f64], base: Option<&[f64]>) {
    let (lo, mid, hi) = spread(values.to_vec());
    let ratio = match base {
        Some(base) => {
            let (lo, mid, hi) = spread(values.iter().zip(base).map(|(v, b)| v / b).collect());
            format!("{:>8} {:>8} {:>8}", num(lo), num(mid), num(hi))
        }
        None => String::new(),
    };
    println!(
        "  {name:<36} {unit:<4} {:>8} {:>8} {:>8}   {ratio}",
        num(lo),
        num(mid),
        num(hi)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let batches = env_var("KEYWAY_BENCH_BATCHES", 2000).max(2);
    let queues = env_var("KEYWAY_BENCH_QUEUES", 16).max(1);
    let rounds = env_var("KEYWAY_BENCH_ROUNDS", 6).max(1);
    println!("load at start (/proc/loadavg): {}", loadavg());

    let dir = std::env::temp_dir().join(format!("keyway-bench-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("keyway.toml");
    let mut text = String::from("[runway]\nmerger = \"fake\"\n\n[topics]\n");
    for (key, stream) in app::registry().iter() {
        text.push_str(&format!("{key} = \"{stream}\"\n"));
    }
    std::fs::write(&config, text).unwrap();
    let setup = Setup {
        batches,
        queues,
        bin: std::env::var_os("KEYWAY_BENCH_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_keyway")),
            PathBuf::from,
        ),
        config,
        logs: dir.clone(),
        main_tid: thread_id(),
    };
    // The same runtime `keyway run` builds by default: one worker thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let started = Instant::now();
    let mut base = Vec::new();
    let (mut in_process, mut processes) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut order = [None, Some(Mode::InProcess), Some(Mode::Processes)];
        order.rotate_left(round % 3);
        for what in order {
            match what {
                None => base.push(baseline()),
                Some(Mode::InProcess) => in_process.push(run_loop(Mode::InProcess, &rt, &setup)),
                Some(Mode::Processes) => processes.push(run_loop(Mode::Processes, &rt, &setup)),
            }
        }
        println!(
            "round {} of {rounds} done, {:.0} s",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }

    println!(
        "\n{batches} batches of 2 requests over {queues} queues, fake merger, redis-server without \
         AOF; {rounds} rounds; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "baseline: redis-benchmark -n {BASELINE_REQUESTS} -c {BASELINE_CLIENTS} XADD bench * \
         payload <{BASELINE_PAYLOAD} bytes>, on a fresh server each round\n"
    );
    println!(
        "  {:<36} {:<4} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
        "measure", "unit", "min", "median", "max", "÷ min", "÷ median", "÷ max"
    );
    let b = |f: fn(&Baseline) -> f64| base.iter().map(f).collect::<Vec<f64>>();
    let rate = b(|b| b.rate);
    let (p50, p99, max) = (
        b(|b| b.latency.p50),
        b(|b| b.latency.p99),
        b(|b| b.latency.max),
    );
    let (redis, client) = (b(|b| b.redis_cpu), b(|b| b.client_cpu));
    let one = vec![1.0; rounds];
    println!("baseline (per XADD)");
    for (name, unit, values) in [
        ("XADD/s", "1/s", &rate),
        ("latency p50", "ms", &p50),
        ("latency p99", "ms", &p99),
        ("latency max", "ms", &max),
        ("Redis CPU", "ms", &redis),
        ("redis-benchmark CPU", "ms", &client),
    ] {
        row(name, unit, values, None);
    }
    type Figure<'a> = (&'a str, &'a str, fn(&LoopRun) -> f64, &'a [f64]);
    let figures: [Figure<'_>; 20] = [
        ("batches/s at saturation", "1/s", |r| r.rate, &rate),
        (
            "  latency p50 (from the backlog)",
            "ms",
            |r| r.saturated.p50,
            &p50,
        ),
        ("  latency p99", "ms", |r| r.saturated.p99, &p99),
        ("  latency max", "ms", |r| r.saturated.max, &max),
        ("  Redis commands", "", |r| r.saturated_costs.commands, &one),
        (
            "  client requests",
            "",
            |r| r.saturated_costs.requests,
            &one,
        ),
        ("  Redis CPU", "ms", |r| r.saturated_costs.redis_cpu, &redis),
        (
            "  Keyway CPU",
            "ms",
            |r| r.saturated_costs.keyway_cpu,
            &client,
        ),
        ("half rate offered", "1/s", |r| r.half_rate, &rate),
        ("  latency p50", "ms", |r| r.half.p50, &p50),
        ("  latency p99", "ms", |r| r.half.p99, &p99),
        ("  latency max", "ms", |r| r.half.max, &max),
        ("  Redis commands", "", |r| r.half_costs.commands, &one),
        ("  client requests", "", |r| r.half_costs.requests, &one),
        (
            "one batch on an idle loop: p50",
            "ms",
            |r| r.single.p50,
            &p50,
        ),
        ("  max", "ms", |r| r.single.max, &max),
        (
            "submitting: Redis commands",
            "",
            |r| r.submit_costs.commands,
            &one,
        ),
        ("  client requests", "", |r| r.submit_costs.requests, &one),
        ("  Redis CPU", "ms", |r| r.submit_costs.redis_cpu, &redis),
        (
            "  Keyway CPU (this process)",
            "ms",
            |r| r.submit_costs.keyway_cpu,
            &client,
        ),
    ];
    for (mode, runs) in [
        (Mode::InProcess, &in_process),
        (Mode::Processes, &processes),
    ] {
        println!("{} (per batch)", mode.name());
        for (name, unit, figure, base) in &figures {
            let values: Vec<f64> = runs.iter().map(figure).collect();
            row(name, unit, &values, Some(base));
        }
    }
    println!("\nload at end (/proc/loadavg): {}", loadavg());
    let _ = std::fs::remove_dir_all(&dir);
}
