//! The Redis ACL rules of each role: the commands it sends and the keys it touches, so that
//! each process runs as a Redis user that can do its own work and nothing else. Above all, only
//! Runway (and the dead-letter reconciler, which answers for a Runway that never did) can write
//! `merge-signal`, whose messages mark batches SUCCEEDED; the mergesignal stage, which consumes
//! it, needs the same access to the stream.
//!
//! How Redis checks them (7.0 and later), and what follows:
//! - A script runs with the caller's permissions: every command a script calls must be granted
//!   (`+xack`, `+zadd`, ...), and every key it touches is checked like a direct call.
//! - The keys passed to `EVALSHA` are checked as read *and* write, whatever the script does with
//!   them: every key a script is given needs full access (`~pattern`). `%R~` (read only) and
//!   `%W~` (write only) are used for keys only ever touched by direct commands: the store
//!   records a role only reads, the sets and lists it only writes.
//! - `AUTH` needs no grant. `CONFIG GET` is left out on purpose: it would also hand out the
//!   server's passwords (`requirepass`, `masterauth`). The start-up check of `maxmemory-policy`
//!   and `appendonly` then logs that it could not read them (and `ACL LOG` shows the refusal):
//!   check those on the server.
//! - `SELECT` is left out: add `+select` when `REDIS_URL` names a database other than 0.
//!
//! Keys, with `P` the configured prefix (`redis.key_prefix`) and `S` the stream of a topic
//! (see `keyway_runtime::redis` for the layout):
//! - publishing on `S`: the stream `P:{S}:s:S` and its dedup keys `P:{S}:d:S:*`;
//! - consuming `S`: the stream, the state of its groups `P:{S}:g:S:*` (trimming reads the state
//!   of every group of the stream), and its dead-letter stream `P:{S}:s:S_dlq`, which the group
//!   scripts are given even when dead-lettering is off (a reconciler consuming `S_dlq` is given
//!   `S_dlq_dlq`). A dead-letter stream's keys carry the hash tag of its base stream;
//! - the orchestrator's records under `P:st:`, by kind (`stages::store`).
//!
//! A command a role is not granted, or a key outside its patterns, is refused with `NOPERM`.

use std::collections::{BTreeMap, BTreeSet};

use keyway::stages::app::Role;
use keyway_runtime::redis::config::DEAD_LETTER_SUFFIX;
use keyway_runtime::redis::Config;

/// Who connects to Redis: a role of `keyway run`, or a command-line client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AclRole {
    /// `keyway run merge`.
    Merge,
    /// `keyway run mergesignal`.
    Mergesignal,
    /// `keyway run runway`.
    Runway,
    /// `keyway run reconcile`.
    Reconcile,
    /// `keyway run conclude`.
    Conclude,
    /// `keyway run speculate`.
    Speculate,
    /// Every role of `keyway run`, one at a time (with --user: one user for `keyway run all`).
    All,
    /// `keyway submit` (and `keyway status`) and the submit API.
    Submit,
    /// `keyway status` and `keyway dlq list`: reads only.
    Inspect,
}

impl AclRole {
    /// The single roles this stands for.
    pub(crate) fn expand(self) -> Vec<AclRole> {
        match self {
            AclRole::All => vec![
                AclRole::Merge,
                AclRole::Mergesignal,
                AclRole::Runway,
                AclRole::Reconcile,
                AclRole::Conclude,
                AclRole::Speculate,
            ],
            one => vec![one],
        }
    }

    /// Its name on the command line, and in the default user name `keyway-<name>`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AclRole::Merge => Role::Merge.name(),
            AclRole::Mergesignal => Role::MergeSignal.name(),
            AclRole::Runway => Role::Runway.name(),
            AclRole::Reconcile => Role::Reconcile.name(),
            AclRole::Conclude => Role::Conclude.name(),
            AclRole::Speculate => Role::Speculate.name(),
            AclRole::All => "all",
            AclRole::Submit => "submit",
            AclRole::Inspect => "inspect",
        }
    }
}

/// Read, write, or both.
type Perm = u8;
const R: Perm = 1;
const W: Perm = 2;
const RW: Perm = R | W;

/// The kinds of orchestrator record, each a key pattern under `P:st:`.
#[derive(Debug, Clone, Copy)]
enum Record {
    /// Every record (read-only roles).
    Any,
    /// The set of queues.
    Queues,
    /// Batch records (`{q}:batch:<id>`), written through the check-and-set script.
    Batch,
    /// Per-state sets of batch ids.
    BatchSets,
    /// Request records.
    Request,
    /// Per-state sets of request ids.
    RequestSets,
    /// Landed revisions per request.
    Revisions,
    /// Batch and request numbers.
    Sequences,
    /// Speculate's wake-ups, appended through a script.
    Speculations,
    /// The once-per-message markers of those wake-ups, set by the same script.
    SpeculationMarkers,
}

impl Record {
    fn pattern(self) -> &'static str {
        match self {
            Record::Any => "*",
            Record::Queues => "queues",
            Record::Batch => "{*}:batch:*",
            Record::BatchSets => "{*}:batchs:*",
            Record::Request => "{*}:request:*",
            Record::RequestSets => "{*}:requests:*",
            Record::Revisions => "{*}:revisions:*",
            Record::Sequences => "{*}:seq:*",
            Record::Speculations => "{*}:speculations",
            Record::SpeculationMarkers => "{*}:speculated:*",
        }
    }

    /// The commands that read (`R`) or write (`W`) this kind.
    fn commands(self, perm: Perm) -> Vec<&'static str> {
        let mut out = Vec::new();
        let (read, write): (&[&'static str], &[&'static str]) = match self {
            // Records and lists are also read by a script without writes (`EVALSHA_RO`).
            Record::Any => (
                &[
                    "hget",
                    "sismember",
                    "smembers",
                    "lrange",
                    "evalsha_ro",
                    "script|load",
                ],
                &[],
            ),
            Record::Queues => (&["sismember", "smembers"], &["sadd"]),
            // The check-and-set script reads the version and state (`HMGET`) and the record.
            Record::Batch | Record::Request => (
                &["hget", "hmget", "evalsha_ro", "script|load"],
                &["hset", "evalsha", "script|load"],
            ),
            // The same script moves the id between the sets (a script's keys are read and
            // written); a repair pipelines `SREM` and `SADD`; `WAIT` follows when
            // `redis.wait_replicas` asks for it.
            Record::BatchSets | Record::RequestSets => {
                (&["smembers"], &["sadd", "srem", "smove", "wait"])
            }
            // Replaced by a script (`DEL`, `RPUSH`), then `WAIT` when asked for.
            Record::Revisions => (
                &["lrange", "evalsha_ro", "script|load"],
                &["del", "rpush", "evalsha", "script|load", "wait"],
            ),
            Record::Speculations => (&["lrange"], &["evalsha", "script|load", "rpush"]),
            Record::SpeculationMarkers => (&[], &["evalsha", "script|load", "set"]),
            // `INCR` for one number, `INCRBY` for a batch's requests at once.
            Record::Sequences => (&["incr"], &["incr", "incrby"]),
        };
        if perm & R != 0 {
            out.extend_from_slice(read);
        }
        if perm & W != 0 {
            out.extend_from_slice(write);
        }
        out
    }
}

/// Every connection: the client pings a server it does not authenticate to, and reads its
/// connection id and the server's version when it connects (it does without them, but each
/// refusal would be an entry in `ACL LOG`, where an operator looks for misuse).
const CONNECTION: &[&str] = &["ping", "client|id", "info"];

/// Publishing: the publish script (dedup `SET NX`, `TIME`, `XADD`), loaded on first use, the
/// look at a stream's newest entry for its protocol version before the first publish, and
/// `WAIT` after it when `redis.wait_replicas` asks for it.
const PUBLISH: &[&str] = &[
    "evalsha",
    "script|load",
    "set",
    "time",
    "xadd",
    "xrevrange",
    "wait",
];

/// Consuming: creating the group, the wake-up reads on a connection of its own, trimming, and
/// every command of the claim, recover, settle, trim and tend scripts (tending removes idle
/// consumers of the group and reads its health).
const CONSUME: &[&str] = &[
    "evalsha",
    "script|load",
    "xgroup|create",
    "xgroup|delconsumer",
    "xread",
    "xrevrange",
    "xinfo|groups",
    "xinfo|consumers",
    "xreadgroup",
    "xautoclaim",
    "xclaim",
    "xpending",
    "xack",
    "xrange",
    "xadd",
    "xtrim",
    "hget",
    "hset",
    "hdel",
    "hincrby",
    "hsetnx",
    "zadd",
    "zrem",
    "zrange",
    "zrangebyscore",
    "zrangebylex",
    "zcard",
    "time",
];

/// Reading a stream without consuming it (`keyway dlq list`).
const PEEK: &[&str] = &["xrange"];

/// The commands and key patterns of one Redis user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Grants {
    commands: BTreeSet<&'static str>,
    keys: BTreeMap<String, Perm>,
}

/// Escape what a Redis key pattern would read as a wildcard.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The hash tag of a stream: its name less any `_dlq` suffixes (as the backend keys it).
fn hash_tag(stream: &str) -> &str {
    let mut tag = stream;
    while let Some(base) = tag.strip_suffix(DEAD_LETTER_SUFFIX) {
        if base.is_empty() {
            break;
        }
        tag = base;
    }
    tag
}

/// What the rules are computed from: the key prefix and the topics' streams.
struct Layout<'a> {
    prefix: String,
    config: &'a Config,
}

impl Layout<'_> {
    /// The topic's streams, one per bucket.
    fn streams(&self, topic: &str) -> Result<Vec<String>, String> {
        self.config.registry.streams(topic).ok_or_else(|| {
            format!("topic key {topic:?} has no stream in the configuration ([topics])")
        })
    }

    fn stream_key(&self, stream: &str) -> String {
        format!("{}:{{{}}}:s:{stream}", self.prefix, hash_tag(stream))
    }
}

impl Grants {
    fn allow(&mut self, commands: &[&'static str]) {
        self.commands.extend(commands.iter().copied());
    }

    fn key(&mut self, pattern: String, perm: Perm) {
        *self.keys.entry(pattern).or_default() |= perm;
    }

    fn publish(&mut self, layout: &Layout<'_>, topic: &str) -> Result<(), String> {
        self.allow(PUBLISH);
        for stream in layout.streams(topic)? {
            self.key(layout.stream_key(&stream), RW);
            let tag = hash_tag(&stream);
            self.key(format!("{}:{{{tag}}}:d:{stream}:*", layout.prefix), RW);
        }
        Ok(())
    }

    fn consume(&mut self, layout: &Layout<'_>, topic: &str) -> Result<(), String> {
        self.allow(CONSUME);
        for stream in layout.streams(topic)? {
            self.key(layout.stream_key(&stream), RW);
            let tag = hash_tag(&stream);
            self.key(format!("{}:{{{tag}}}:g:{stream}:*", layout.prefix), RW);
            self.key(
                layout.stream_key(&format!("{stream}{DEAD_LETTER_SUFFIX}")),
                RW,
            );
        }
        Ok(())
    }

    fn peek(&mut self, layout: &Layout<'_>, topic: &str) -> Result<(), String> {
        self.allow(PEEK);
        for stream in layout.streams(topic)? {
            self.key(layout.stream_key(&stream), R);
        }
        Ok(())
    }

    fn store(&mut self, layout: &Layout<'_>, record: Record, perm: Perm) {
        self.allow(&record.commands(perm));
        self.key(format!("{}:st:{}", layout.prefix, record.pattern()), perm);
    }

    /// Everything `other` is granted, too.
    pub(crate) fn merge(&mut self, other: &Grants) {
        self.commands.extend(other.commands.iter().copied());
        for (pattern, perm) in &other.keys {
            self.key(pattern.clone(), *perm);
        }
    }

    /// The rules, in `ACL SETUSER` syntax: commands, then key patterns.
    pub(crate) fn rules(&self) -> Vec<String> {
        let mut out: Vec<String> = self.commands.iter().map(|c| format!("+{c}")).collect();
        for (pattern, perm) in &self.keys {
            out.push(match *perm {
                R => format!("%R~{pattern}"),
                W => format!("%W~{pattern}"),
                _ => format!("~{pattern}"),
            });
        }
        out
    }

    /// One `ACL SETUSER` command: idempotent (it replaces the user's permissions each time)
    /// and leaves the user's passwords alone; a new user has none until one is added
    /// (`ACL SETUSER <user> >password`).
    pub(crate) fn setuser(&self, user: &str) -> String {
        format!(
            "ACL SETUSER {user} on resetkeys resetchannels clearselectors -@all {}",
            self.rules().join(" ")
        )
    }
}

/// The grants of `role` (a single role, not `all`) under `config`.
pub(crate) fn grants(role: AclRole, config: &Config) -> Result<Grants, String> {
    let prefix = &config.redis.key_prefix;
    if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
        return Err(format!(
            "config key `redis.key_prefix`: {prefix:?} cannot be written in an ACL rule (empty or with spaces)"
        ));
    }
    let layout = Layout {
        prefix: literal(prefix),
        config,
    };
    let mut g = Grants::default();
    g.allow(CONNECTION);
    match role {
        AclRole::Merge => {
            g.consume(&layout, "submitqueue-merge")?;
            g.publish(&layout, "runway-merge")?;
            g.publish(&layout, "log")?;
            g.store(&layout, Record::Any, R);
        }
        AclRole::Mergesignal => {
            g.consume(&layout, "merge-signal")?;
            g.publish(&layout, "conclude")?;
            g.publish(&layout, "speculate")?;
            g.store(&layout, Record::Batch, RW);
            g.store(&layout, Record::BatchSets, RW);
            g.store(&layout, Record::Revisions, RW);
        }
        AclRole::Runway => {
            g.consume(&layout, "runway-merge")?;
            g.consume(&layout, "merge-conflict-check")?;
            g.publish(&layout, "merge-signal")?;
            g.publish(&layout, "merge-conflict-check-signal")?;
        }
        AclRole::Reconcile => {
            for topic in [
                "submitqueue-merge_dlq",
                "merge-signal_dlq",
                "runway-merge_dlq",
                "merge-conflict-check_dlq",
                "conclude_dlq",
                "speculate_dlq",
            ] {
                g.consume(&layout, topic)?;
            }
            // Failing a batch: its record, its requests, the fan-out and their log events.
            g.publish(&layout, "conclude")?;
            g.publish(&layout, "speculate")?;
            g.publish(&layout, "log")?;
            g.publish(&layout, "parked")?;
            // Answering for Runway: FAILED, never SUCCEEDED.
            g.publish(&layout, "merge-signal")?;
            g.publish(&layout, "merge-conflict-check-signal")?;
            g.store(&layout, Record::Batch, RW);
            g.store(&layout, Record::BatchSets, RW);
            g.store(&layout, Record::Request, RW);
            g.store(&layout, Record::RequestSets, RW);
            // Applying a dead-lettered success: its revisions.
            g.store(&layout, Record::Revisions, RW);
        }
        AclRole::Conclude => {
            g.consume(&layout, "conclude")?;
            g.publish(&layout, "log")?;
            g.store(&layout, Record::Batch, R);
            g.store(&layout, Record::Request, RW);
            g.store(&layout, Record::RequestSets, RW);
            g.store(&layout, Record::Revisions, R);
        }
        AclRole::Speculate => {
            g.consume(&layout, "speculate")?;
            g.store(&layout, Record::Speculations, RW);
            g.store(&layout, Record::SpeculationMarkers, RW);
        }
        AclRole::Submit => {
            g.publish(&layout, "submitqueue-merge")?;
            g.store(&layout, Record::Queues, W);
            g.store(&layout, Record::Sequences, RW);
            g.store(&layout, Record::Batch, RW);
            g.store(&layout, Record::BatchSets, RW);
            g.store(&layout, Record::Request, RW);
            g.store(&layout, Record::RequestSets, RW);
        }
        AclRole::Inspect => {
            g.peek(&layout, "parked")?;
            g.store(&layout, Record::Any, R);
        }
        AclRole::All => {
            for one in AclRole::All.expand() {
                g.merge(&grants(one, config)?);
            }
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str) -> Config {
        let mut c = keyway::stages::app::config("redis://127.0.0.1:6379");
        c.redis.key_prefix = prefix.to_owned();
        c
    }

    #[test]
    fn runway_writes_the_signal_streams_and_reads_its_own() {
        let rules = grants(AclRole::Runway, &config("kw")).unwrap().rules();
        let keys: Vec<&str> = rules
            .iter()
            .filter(|r| !r.starts_with('+'))
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "~kw:{merge-conflict-check-signal}:d:merge-conflict-check-signal:*",
                "~kw:{merge-conflict-check-signal}:s:merge-conflict-check-signal",
                "~kw:{merge-conflict-check}:g:merge-conflict-check:*",
                "~kw:{merge-conflict-check}:s:merge-conflict-check",
                "~kw:{merge-conflict-check}:s:merge-conflict-check_dlq",
                "~kw:{merge-signal}:d:merge-signal:*",
                "~kw:{merge-signal}:s:merge-signal",
                "~kw:{runway-merge}:g:runway-merge:*",
                "~kw:{runway-merge}:s:runway-merge",
                "~kw:{runway-merge}:s:runway-merge_dlq",
            ]
        );
        // No store, and no command beyond the queue's.
        assert!(!rules.iter().any(|r| r.contains(":st:")));
        assert!(!rules.contains(&"+del".to_owned()), "{rules:?}");
    }

    #[test]
    fn only_runway_and_the_reconciler_can_write_merge_signal() {
        let signal = "~kw:{merge-signal}:s:merge-signal";
        for role in AclRole::All
            .expand()
            .into_iter()
            .chain([AclRole::Submit, AclRole::Inspect])
        {
            let rules = grants(role, &config("kw")).unwrap().rules();
            let writes = rules.iter().any(|r| r == signal);
            // The mergesignal stage consumes it, which takes the same access.
            let expected = matches!(
                role,
                AclRole::Runway | AclRole::Reconcile | AclRole::Mergesignal
            );
            assert_eq!(writes, expected, "{role:?}: {rules:?}");
        }
    }

    #[test]
    fn dead_letter_consumers_are_keyed_by_the_base_stream() {
        let rules = grants(AclRole::Reconcile, &config("kw")).unwrap().rules();
        for key in [
            "~kw:{merge-signal}:s:merge-signal_dlq",
            "~kw:{merge-signal}:g:merge-signal_dlq:*",
            "~kw:{merge-signal}:s:merge-signal_dlq_dlq",
        ] {
            assert!(rules.iter().any(|r| r == key), "{key}: {rules:?}");
        }
    }

    #[test]
    fn a_topic_in_buckets_is_granted_every_bucket() {
        let mut config = config("kw");
        config.registry.set_buckets("merge-signal", 2).unwrap();
        let runway = grants(AclRole::Runway, &config).unwrap().rules();
        let reconcile = grants(AclRole::Reconcile, &config).unwrap().rules();
        for b in ["0", "1"] {
            let stream = format!("~kw:{{merge-signal#{b}}}:s:merge-signal#{b}");
            assert!(runway.contains(&stream), "{stream}: {runway:?}");
            let dlq = format!("~kw:{{merge-signal#{b}}}:g:merge-signal#{b}_dlq:*");
            assert!(reconcile.contains(&dlq), "{dlq}: {reconcile:?}");
        }
        assert!(!runway.iter().any(|r| r.ends_with("}:s:merge-signal")));
    }

    #[test]
    fn read_only_and_write_only_keys_use_their_selectors() {
        let merge = grants(AclRole::Merge, &config("kw")).unwrap().rules();
        assert!(merge.contains(&"%R~kw:st:*".to_owned()), "{merge:?}");
        let speculate = grants(AclRole::Speculate, &config("kw")).unwrap().rules();
        assert!(
            speculate.contains(&"~kw:st:{*}:speculations".to_owned()),
            "{speculate:?}"
        );
        let submit = grants(AclRole::Submit, &config("kw")).unwrap().rules();
        assert!(submit.contains(&"%W~kw:st:queues".to_owned()), "{submit:?}");
        // A key a script is given is read and written.
        let mergesignal = grants(AclRole::Mergesignal, &config("kw")).unwrap().rules();
        assert!(
            mergesignal.contains(&"~kw:st:{*}:revisions:*".to_owned()),
            "{mergesignal:?}"
        );
    }

    #[test]
    fn the_prefix_comes_from_the_config_and_is_matched_literally() {
        let rules = grants(AclRole::Inspect, &config("app*1")).unwrap().rules();
        assert!(rules.contains(&"%R~app\\*1:st:*".to_owned()), "{rules:?}");
        assert!(grants(AclRole::Inspect, &config("a b")).is_err());
    }

    #[test]
    fn all_is_the_union_of_the_run_roles() {
        let c = config("kw");
        let all = grants(AclRole::All, &c).unwrap();
        for one in AclRole::All.expand() {
            let mut with = all.clone();
            with.merge(&grants(one, &c).unwrap());
            assert_eq!(with, all, "{one:?}");
        }
        let line = all.setuser("keyway-all");
        assert!(
            line.starts_with(
                "ACL SETUSER keyway-all on resetkeys resetchannels clearselectors -@all +"
            ),
            "{line}"
        );
    }
}
