//! What the merge loop costs Redis: commands and client requests per batch, and commands per
//! second of an idle subscription, counted on a real `redis-server` with every role in this
//! process and the fake merger. The test prints the figures and fails when one grows past its
//! bound, so a change that adds round trips shows up here.
//!
//! How it counts, over a window that starts after a warm-up batch (so no script is loaded
//! inside it) and ends when every batch is terminal, every request settled, every wake-up
//! recorded and every consumer group has nothing pending or unread:
//! - `MONITOR` on a connection of its own lists every command the server runs. A line from a
//!   client is one *client request* (a script call, `EVALSHA`, is one); a line marked `lua` is a
//!   command run inside a script. *Commands* are both together, which is also what
//!   `INFO commandstats` counts (printed as a cross-check).
//! - *Reads* (`INFO stats` `total_reads_processed`) count the times the server read from a
//!   client socket: requests a client pipelines arrive in one read, so reads approach the
//!   client's round trips. They are printed, not bounded: how the bytes of a pipeline are split
//!   across reads is up to the kernel.
//! - The test's own probes go through one plain connection, whose lines, reads and
//!   commandstats calls are left out.
//! - The consume loops' timers (a blocking `XREAD` that times out each second; a claim every
//!   five seconds, a recovery pass every half visibility timeout and a trim tick, unless
//!   something is due sooner) run during the window too: the idle rate, measured afterwards
//!   over a quiet period, tells how much of a window that is.
//!
//! The idle rate is the one figure taken over wall-clock time; its window is long enough to
//! hold each timer at least once (all loops go idle together, so a shorter one would see the
//! claims or not depending on when it starts).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, Value};
use fred::types::{ClusterHash, CustomCommand};
use keyway::merge_service::{AnyMerger, FakeMerger};
use keyway::orchestrator::{Batch, BatchState, LandStrategy, Request, RequestState};
use keyway::stages::app::{self, Role};
use keyway::stages::store::Store;
use keyway::stages::submit::{submit, NewRequest};
use keyway_runtime::json;
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend, Shutdown};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const FAKE: AnyMerger = AnyMerger::Fake(FakeMerger);

/// Batches measured (after one warm-up batch), each of two requests.
const BATCHES: usize = 10;

/// Upper bounds per batch of two requests: the measured value plus a margin for the consume
/// loops' timers, which tick during the window (an idle claim of a subscription is one request
/// and three commands, a blocking read one).
///
/// Measured: the loop 21 requests and 114 commands (a record and its membership move in one
/// script; a batch read with its requests in one script, its requests written in one, a batch
/// with its revisions in one; a claim scans for expired entries only when one may have expired; what a
/// handler publishes goes out in its settle script; a settle frees its key without reading who
/// holds it), submitting 5 requests and 17 commands.
const MAX_LOOP_REQUESTS: f64 = 24.0;
const MAX_LOOP_COMMANDS: f64 = 124.0;
const MAX_SUBMIT_REQUESTS: f64 = 6.0;
const MAX_SUBMIT_COMMANDS: f64 = 19.0;
/// Upper bound on an idle subscription's commands per second (measured 3.4: each second a
/// blocking read that times out, every five seconds a claim of three commands and a recovery
/// pass, every ten the trim and tend scripts).
const MAX_IDLE_COMMANDS_PER_SUBSCRIPTION_PER_S: f64 = 5.0;

/// The quiet period the idle rate is taken over.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// A RESP2 reply.
#[derive(Debug, Clone)]
enum Reply {
    Text(String),
    Int(i64),
    Nil,
    List(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> Option<&str> {
        match self {
            Reply::Text(t) => Some(t),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    fn list(&self) -> &[Reply] {
        match self {
            Reply::List(items) => items,
            _ => &[],
        }
    }
}

/// A plain RESP2 connection, for probes the counts can leave out.
struct Probe {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Its own address as the server names it (`ip:port`).
    addr: String,
    /// Requests sent, by command name (lower case).
    sent: BTreeMap<String, u64>,
}

async fn line(reader: &mut BufReader<OwnedReadHalf>) -> String {
    let mut text = String::new();
    let n = reader.read_line(&mut text).await.expect("read from redis");
    assert!(n > 0, "redis closed the connection");
    text.truncate(text.trim_end_matches(['\r', '\n']).len());
    text
}

fn read_reply(
    reader: &mut BufReader<OwnedReadHalf>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + '_>> {
    Box::pin(async move {
        let head = line(reader).await;
        let (kind, rest) = head.split_at(1);
        match kind {
            "+" => Reply::Text(rest.to_owned()),
            "-" => panic!("redis error: {rest}"),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return Reply::Nil;
                }
                let mut buf = vec![0; len as usize + 2];
                reader.read_exact(&mut buf).await.unwrap();
                buf.truncate(len as usize);
                Reply::Text(String::from_utf8(buf).unwrap())
            }
            "*" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return Reply::Nil;
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(read_reply(reader).await);
                }
                Reply::List(items)
            }
            _ => panic!("unexpected reply {head:?}"),
        }
    })
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

async fn connect(port: u16) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (r, w) = stream.into_split();
    (BufReader::new(r), w)
}

impl Probe {
    async fn connect(port: u16) -> Probe {
        let (reader, writer) = connect(port).await;
        let mut probe = Probe {
            reader,
            writer,
            addr: String::new(),
            sent: BTreeMap::new(),
        };
        let info = probe.call(&["CLIENT", "INFO"]).await;
        probe.addr = info
            .text()
            .unwrap()
            .split(' ')
            .find_map(|f| f.strip_prefix("addr="))
            .unwrap()
            .to_owned();
        probe
    }

    async fn call(&mut self, args: &[&str]) -> Reply {
        let name = args[0].to_ascii_lowercase();
        let name = match name.as_str() {
            "client" | "config" | "xinfo" => format!("{name}|{}", args[1].to_ascii_lowercase()),
            _ => name,
        };
        *self.sent.entry(name).or_default() += 1;
        self.writer.write_all(&encode(args)).await.unwrap();
        read_reply(&mut self.reader).await
    }

    /// `INFO <section>` as `field → value`.
    async fn info(&mut self, section: &str) -> BTreeMap<String, String> {
        let reply = self.call(&["INFO", section]).await;
        reply
            .text()
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Calls per command from `INFO commandstats`.
    async fn commandstats(&mut self) -> BTreeMap<String, u64> {
        self.info("commandstats")
            .await
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("cmdstat_")?;
                let calls = v.split(',').find_map(|f| f.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    async fn reads(&mut self) -> u64 {
        self.info("stats").await["total_reads_processed"]
            .parse()
            .unwrap()
    }

    async fn record<M: json::JsonMessage>(&mut self, key: &str) -> Option<M> {
        let reply = self.call(&["HGET", key, "d"]).await;
        reply
            .text()
            .map(|t| json::from_slice(t.as_bytes()).unwrap())
    }
}

/// Every line `MONITOR` prints, as it arrives.
#[derive(Clone, Default)]
struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    async fn start(port: u16) -> Monitor {
        let (mut reader, mut writer) = connect(port).await;
        writer.write_all(&encode(&["MONITOR"])).await.unwrap();
        assert_eq!(line(&mut reader).await, "+OK");
        let monitor = Monitor::default();
        let lines = monitor.lines.clone();
        tokio::spawn(async move {
            let _writer = writer;
            loop {
                let mut text = String::new();
                match reader.read_line(&mut text).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => lines.lock().unwrap().push(text.trim_end().to_owned()),
                }
            }
        });
        monitor
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<String> {
        self.lines.lock().unwrap()[from..].to_vec()
    }
}

/// One command the server ran, as `MONITOR` shows it.
struct Seen {
    /// `lua` for a command run inside a script, else the client's `ip:port`.
    source: String,
    args: Vec<String>,
}

/// Parse `+<time> [<db> <source>] "<arg>" "<arg>" ...` (arguments quoted, with `\"`, `\\` and
/// `\xNN` escapes).
fn parse(line: &str) -> Option<Seen> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let source = line[open + 1..close].split(' ').nth(1)?.to_owned();
    let mut args = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(e) = chars.next() {
                        arg.push(e);
                    }
                }
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    Some(Seen { source, args })
}

/// What a script call is, from its keys and arguments: `publish`, `claim`, `settle:<action>`,
/// `recover`, `trim`/`tend` (both: a stream and its groups' `held` keys), `store:cas`,
/// `store:read`, `store:speculation`, or `script`.
fn script_kind(args: &[String]) -> String {
    let keys: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    let key = |i: usize| args.get(3 + i).map(String::as_str).unwrap_or("");
    let argv: &[String] = args.get(3 + keys..).unwrap_or(&[]);
    if key(0).contains(":st:") {
        return if key(1).contains(":speculated:") {
            "store:speculation".into()
        } else if argv.first().is_some_and(|a| a == "h" || a == "l") {
            "store:read".into()
        } else {
            "store:cas".into()
        };
    }
    if keys == 2 && key(1).contains(":d:") {
        return "publish".into();
    }
    // A group script has 9 keys; a settle that publishes with its ack has two more per
    // message (its stream and dedup key).
    if keys >= 9 && (keys - 9) % 2 == 0 {
        let actions = [
            "ack",
            "nack",
            "postpone",
            "reject",
            "malformed",
            "release",
            "extend",
        ];
        if let Some(action) = argv.get(7).filter(|a| actions.contains(&a.as_str())) {
            return if keys > 9 {
                format!("settle:{action}+publish")
            } else {
                format!("settle:{action}")
            };
        }
        let scan_flag = argv.len() == 8 && argv[7] == "0";
        if (argv.len() == 7 || scan_flag) && argv[6].bytes().all(|b| b.is_ascii_digit()) {
            return "claim".into();
        }
        return "recover".into();
    }
    if key(0).contains(":s:") {
        return "trim/tend".into();
    }
    "script".into()
}

/// Counts over a window of `MONITOR` lines, the probe's left out.
#[derive(Default, Debug)]
struct Counts {
    /// Client requests, by command (script calls by kind, see [`script_kind`]).
    requests: BTreeMap<String, u64>,
    /// Commands run inside scripts, by command.
    in_scripts: BTreeMap<String, u64>,
}

impl Counts {
    /// The commands of clients `from` (and the scripts they call), or of every client but
    /// `not_from`.
    fn of(lines: &[String], from: Option<&str>, not_from: &[&str]) -> Counts {
        let mut counts = Counts::default();
        let mut caller = String::new();
        for seen in lines.iter().filter_map(|l| parse(l)) {
            if seen.args.is_empty() {
                continue;
            }
            // A script's commands follow its call (the server runs one thing at a time).
            if seen.source != "lua" {
                caller = seen.source.clone();
            }
            let wanted = match from {
                Some(addr) => caller == addr,
                None => !not_from.contains(&caller.as_str()),
            };
            if !wanted {
                continue;
            }
            let name = seen.args[0].to_ascii_lowercase();
            if seen.source == "lua" {
                *counts.in_scripts.entry(name).or_default() += 1;
                continue;
            }
            let name = match name.as_str() {
                "evalsha" | "evalsha_ro" | "eval" => format!("{name} {}", script_kind(&seen.args)),
                _ => name,
            };
            *counts.requests.entry(name).or_default() += 1;
        }
        counts
    }

    fn requests(&self) -> u64 {
        self.requests.values().sum()
    }

    fn commands(&self) -> u64 {
        self.requests() + self.in_scripts.values().sum::<u64>()
    }
}

fn show(title: &str, map: &BTreeMap<String, u64>, per: f64) {
    let total: u64 = map.values().sum();
    println!("{title}: {:.1}", total as f64 / per);
    for (name, n) in map {
        println!("  {:>7.1}  {name}", *n as f64 / per);
    }
}

fn uri(n: usize) -> String {
    format!("file:///srv/round-trips.git/refs%2Fheads%2Fx/{n:040x}")
}

fn stream_key(prefix: &str, stream: &str) -> String {
    format!("{prefix}:{{{stream}}}:s:{stream}")
}

/// Whether every batch of `ids` is terminal with its members settled, `speculations` wake-ups
/// are recorded, and no consumer group has anything pending or unread.
async fn all_done(probe: &mut Probe, prefix: &str, ids: &[String], speculations: usize) -> bool {
    for id in ids {
        let key = format!("{prefix}:st:{{rt}}:batch:{id}");
        let Some(batch) = probe.record::<Batch>(&key).await else {
            return false;
        };
        if !matches!(batch.state(), BatchState::Succeeded | BatchState::Failed) {
            return false;
        }
        for r in &batch.contains {
            let key = format!("{prefix}:st:{{rt}}:request:{r}");
            let request = probe.record::<Request>(&key).await.unwrap();
            if request.state() == RequestState::Queued {
                return false;
            }
        }
    }
    let key = format!("{prefix}:st:{{rt}}:speculations");
    if probe.call(&["LLEN", &key]).await.int() != Some(speculations as i64) {
        return false;
    }
    for (_, stream) in app::registry().iter() {
        let key = stream_key(prefix, stream);
        if probe.call(&["EXISTS", &key]).await.int() != Some(1) {
            continue;
        }
        for group in probe.call(&["XINFO", "GROUPS", &key]).await.list() {
            let fields = group.list();
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0].text() == Some(name))
                    .map(|kv| kv[1].clone())
            };
            let pending = field("pending").and_then(|v| v.int());
            let lag = field("lag").and_then(|v| v.int());
            if pending != Some(0) || lag != Some(0) {
                return false;
            }
        }
    }
    true
}

/// The address the server sees `backend`'s client at.
async fn client_addr(backend: &RedisBackend) -> String {
    let info: Value = backend
        .client()
        .custom::<Value, Value>(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["INFO".into()],
        )
        .await
        .unwrap();
    info.as_string()
        .unwrap()
        .split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .unwrap()
        .to_owned()
}

async fn submit_batch(backend: &RedisBackend, store: &Store, n: usize) -> Batch {
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
    submit(backend, store, "rt", &requests).await.unwrap()
}

async fn wait_done(probe: &mut Probe, prefix: &str, ids: &[String], speculations: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_done(probe, prefix, ids, speculations).await {
        assert!(Instant::now() < deadline, "the batches did not settle");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_commands_per_batch_stay_bounded() {
    let server = EmbeddedRedis::start(EmbeddedOptions {
        append_only: false,
        ..Default::default()
    })
    .expect("redis-server starts");
    let port: u16 = server.url().rsplit(':').next().unwrap().parse().unwrap();
    let (backend, _) = RedisBackend::connect(app::config(&server.url()))
        .await
        .unwrap();
    let prefix = backend.config().redis.key_prefix.clone();
    // Submitting goes through a client of its own, so its cost is counted apart.
    let (submitter, _) = RedisBackend::connect(app::config(&server.url()))
        .await
        .unwrap();
    let store = Store::new(&submitter);
    let submit_addr = client_addr(&submitter).await;
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(&backend, &Role::ALL, &FAKE, &shutdown);
    let subscriptions = tasks.len();
    let mut probe = Probe::connect(port).await;
    let monitor = Monitor::start(port).await;

    // Warm-up: groups created, scripts loaded, first recovery passes done.
    let warm = submit_batch(&submitter, &store, 0).await;
    wait_done(&mut probe, &prefix, &[warm.id], 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent_before = probe.sent.clone();
    let stats_before = probe.commandstats().await;
    let reads_before = probe.reads().await;
    let from = monitor.len();
    let started = Instant::now();
    let mut ids = Vec::new();
    // One batch at a time: batches of one queue that overlap wait behind each other (their
    // partition key is the queue), which costs more and would make the counts depend on timing.
    for n in 1..=BATCHES {
        ids.push(submit_batch(&submitter, &store, n).await.id);
        wait_done(&mut probe, &prefix, &ids, n + 1).await;
    }
    let elapsed = started.elapsed();
    let to = monitor.len();
    let reads_after = probe.reads().await;
    let stats_after = probe.commandstats().await;

    // The idle rate, over a quiet period right after.
    let idle_from = monitor.len();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_lines = monitor.since(idle_from);

    trigger.trigger();
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }

    let lines = monitor.since(from);
    let window = &lines[..to - from];
    let looped = Counts::of(window, None, &[&probe.addr, &submit_addr]);
    let submitted = Counts::of(window, Some(&submit_addr), &[]);
    let idle = Counts::of(&idle_lines, None, &[&probe.addr]);
    let per = BATCHES as f64;

    // The probe's own calls inside the window: between the first and last commandstats
    // snapshots, less the INFO that took the first one (it counts itself after replying).
    let mut probed: BTreeMap<String, u64> = probe.sent.clone();
    for (name, n) in &sent_before {
        *probed.get_mut(name).unwrap() -= n;
    }
    let probe_calls: u64 = probed.values().sum::<u64>();
    let stats_delta: u64 = stats_after
        .iter()
        .map(|(name, n)| n - stats_before.get(name).copied().unwrap_or(0))
        .sum::<u64>()
        .saturating_sub(probe_calls)
        .saturating_add(1);
    // Reads are counted as they happen: those of the two INFO calls before `reads_before` are
    // not in the delta, nor is the last commandstats call.
    let probe_reads = probe_calls - 3;
    let reads = (reads_after - reads_before).saturating_sub(probe_reads);

    let idle_rate = idle.commands() as f64 / IDLE_WINDOW.as_secs_f64() / subscriptions as f64;
    let idle_in_window = idle.commands() as f64 / IDLE_WINDOW.as_secs_f64() * elapsed.as_secs_f64();

    println!(
        "{BATCHES} batches of 2 requests in {elapsed:?}, {subscriptions} subscriptions; per batch:"
    );
    println!("== the loop (every role)");
    show("client requests", &looped.requests, per);
    show("commands inside scripts", &looped.in_scripts, per);
    println!("commands: {:.1}", looped.commands() as f64 / per);
    println!(
        "of which the idle loops' timers, estimated: {:.1} commands",
        idle_in_window / per
    );
    println!("== submitting");
    show("client requests", &submitted.requests, per);
    println!("commands: {:.1}", submitted.commands() as f64 / per);
    println!("== both");
    println!(
        "commands: {:.1} (INFO commandstats: {:.1}); reads from clients: {:.1}",
        (looped.commands() + submitted.commands()) as f64 / per,
        stats_delta as f64 / per,
        reads as f64 / per
    );
    println!("== idle");
    println!(
        "{idle_rate:.2} commands/s per subscription ({} requests, {} commands in {IDLE_WINDOW:?})",
        idle.requests(),
        idle.commands()
    );
    show(
        "client requests per second",
        &idle.requests,
        IDLE_WINDOW.as_secs_f64(),
    );

    let bounded = [
        ("loop commands", looped.commands(), MAX_LOOP_COMMANDS),
        ("loop client requests", looped.requests(), MAX_LOOP_REQUESTS),
        ("submit commands", submitted.commands(), MAX_SUBMIT_COMMANDS),
        (
            "submit client requests",
            submitted.requests(),
            MAX_SUBMIT_REQUESTS,
        ),
    ];
    for (what, n, bound) in bounded {
        let n = n as f64 / per;
        assert!(n <= bound, "{n:.1} {what} per batch, bound {bound}");
    }
    assert!(
        idle_rate <= MAX_IDLE_COMMANDS_PER_SUBSCRIPTION_PER_S,
        "{idle_rate:.2} idle commands/s per subscription, bound {MAX_IDLE_COMMANDS_PER_SUBSCRIPTION_PER_S}"
    );
}
