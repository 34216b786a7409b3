//! Requests and batches in Redis, with optimistic concurrency.
//!
//! Every key lives under the backend's key prefix (`redis.key_prefix`, default `kw`; shown as
//! `<p>` below), so an ACL that allows `~<p>:*` covers the stages as well as the queues, and a
//! queue's records carry the queue as hash tag, so they share one slot in a Redis Cluster:
//!
//! | key | type | what |
//! |---|---|---|
//! | `<p>:st:{<queue>}:batch:<id>` | hash | `v` (version), `d` (the `Batch` as protobuf JSON), `s` (its state's name) |
//! | `<p>:st:{<queue>}:request:<id>` | hash | the same for a `Request` |
//! | `<p>:st:{<queue>}:batchs:<state>`, `…:requests:<state>` | set | ids by state (membership) |
//! | `<p>:st:{<queue>}:revisions:<request>` | list | the revisions a request's step produced |
//! | `<p>:st:{<queue>}:seq:<kind>` | string | the id counter of `batch` or `request` |
//! | `<p>:st:{<queue>}:speculations` | list | batches whose completion woke `speculate`, in order |
//! | `<p>:st:{<queue>}:speculated:<sha1 of message id>` | string, TTL | that wake-up is counted |
//! | `<p>:st:queues` | set | the registered queues |
//!
//! [`Store::update_batch`] and [`Store::update_request`] write only when the stored version
//! equals the version the caller read; a mismatch is a [`StoreError::Conflict`], which stages
//! turn into a retryable failure so the redelivery re-reads. The same script moves the record's
//! id into its new state's set (one `SMOVE` from the state the record had), so a record and its
//! membership change together; [`Store::repair_batch_membership`] puts the sets right from the
//! record for records written otherwise (clients that write the sets after the record).
//!
//! Text the stages write that echoes their input is bounded (see [`cut`]): an identifier quoted
//! in a reason keeps at most [`MAX_ECHO`] bytes, a reason at most [`MAX_REASON`].

use std::borrow::Cow;
use std::sync::Arc;

use fred::prelude::{Client, ClientLike, Value};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use keyway_runtime::json;
use keyway_runtime::redis::RedisBackend;
use keyway_runtime::stub::HandlerError;
use keyway_runtime::transport::{TransportError, TransportErrorKind};

use crate::orchestrator::{Batch, BatchState, Request, RequestState};

/// The most bytes of a reason the stages write: a batch's `failure_reason`, a request's
/// `error`, a log event's detail, a parked reason, and a handler error (which the backend keeps
/// as the dead letter's `dlq.last_error`).
pub const MAX_REASON: usize = 1024;

/// The most requests a message may name for [`Store::batch_with_requests`] to read with the
/// batch.
pub const MAX_NAMED: usize = 1000;

/// The most bytes of an identifier (a batch id, a queue name) quoted inside a reason.
pub const MAX_ECHO: usize = 256;

/// `text` cut to at most `max` bytes, on a char boundary, ending in `… [cut from <n> bytes]`
/// when it was longer (`<n>` is its length); unchanged when it fits.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let marker = format!("… [cut from {} bytes]", text.len());
    let mut keep = max.saturating_sub(marker.len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    Cow::Owned(format!("{}{marker}", &text[..keep]))
}

/// A reason, cut to [`MAX_REASON`].
pub fn reason(text: &str) -> Cow<'_, str> {
    cut(text, MAX_REASON)
}

/// An identifier to quote in a reason, cut to [`MAX_ECHO`].
pub fn echo(id: &str) -> Cow<'_, str> {
    cut(id, MAX_ECHO)
}

/// `prefix` then `text`, together cut to [`MAX_REASON`] (the cut falls in `text`).
pub fn prefixed(prefix: &str, text: &str) -> String {
    let room = MAX_REASON.saturating_sub(prefix.len());
    format!("{prefix}{}", cut(text, room))
}

/// `e` with its reason and detail cut to [`MAX_REASON`], retryable or not as it was.
pub fn bounded(e: HandlerError) -> HandlerError {
    let failure = e.failure();
    if failure.reason.len() <= MAX_REASON && failure.detail.values().all(|v| v.len() <= MAX_REASON)
    {
        return e;
    }
    let text = reason(&failure.reason).into_owned();
    let mut out = if e.is_retryable() {
        HandlerError::retryable(text)
    } else {
        HandlerError::permanent(text)
    };
    for (k, v) in &failure.detail {
        out = out.with_detail(k.clone(), reason(v).into_owned());
    }
    out
}

/// Write records only if each stored version is the one read, all of them or none, move each
/// id between its kind's membership sets, and replace lists. KEYS: per record its key, then
/// (optional) its kind's state sets; then the lists. ARGV: 1 the number of records, 2 the number
/// of lists, then per record: its number of sets, the version read (`0` for a new record), the
/// new version, the record, its state's name, its id, and the state of each of its sets, in
/// `KEYS` order; then per list its number of items and the items. Returns `[0, i]` when record
/// `i`'s version does not match (nothing is written); when written, `[1, …]` with the state each
/// record had before: `""` for a new record, `"?"` for one written without its state (before
/// `s` was kept) and for this very write found applied already (the client re-sends a command
/// whose reply a reconnect lost: the write is then a success). An id is moved with one `SMOVE`
/// from the state the record had; when that state is unknown, or its set does not hold the id,
/// it is removed from every other set.
const CAS: &str = include_str!("lua/store_cas.lua");

/// Count a wake-up once per message. KEYS: 1 the queue's `speculations` list, 2 the message's
/// `speculated` marker. ARGV: 1 the marker's TTL (ms), 2 the batch. Returns 1 when counted, 0
/// when the message was counted before (a redelivery).
const NOTE_SPECULATION: &str = include_str!("lua/note_speculation.lua");

/// Read records and lists (a script without writes, run with `EVALSHA_RO`). KEYS: what to read
/// (one slot). ARGV: for each key `l` for a list (its items) or `h` for a record (its `d`, nil
/// when it does not exist). Returns one reply per key.
const READ: &str = include_str!("lua/store_read.lua");

/// A count as a script argument.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A store failure.
#[derive(Debug)]
pub enum StoreError {
    /// The record changed since it was read.
    Conflict(String),
    /// Redis failed.
    Transport(TransportError),
    /// A stored record does not decode.
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(what) => write!(f, "version conflict on {what}"),
            StoreError::Transport(e) => e.fmt(f),
            StoreError::Corrupt(what) => write!(f, "stored record is corrupt: {what}"),
        }
    }
}

/// Version conflicts and lost connections are retried; a corrupt record is not. (`StoreError`
/// is deliberately not a `std::error::Error`, so this impl, not the runtime's catch-all, decides.)
impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        let text = reason(&e.to_string()).into_owned();
        match e {
            StoreError::Conflict(_) => HandlerError::retryable(text),
            StoreError::Transport(ref t) if t.is_retryable() => HandlerError::retryable(text),
            _ => HandlerError::permanent(text),
        }
    }
}

fn transport(e: fred::error::Error) -> StoreError {
    let kind = match e.kind() {
        fred::error::ErrorKind::IO | fred::error::ErrorKind::Canceled => {
            TransportErrorKind::Connection
        }
        fred::error::ErrorKind::Timeout => TransportErrorKind::Timeout,
        _ => TransportErrorKind::Other,
    };
    StoreError::Transport(TransportError::new(kind, format!("redis: {e}")))
}

/// The queue of an entity id: the part before the first `/`.
pub fn queue_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

/// Requests and batches.
#[derive(Clone)]
pub struct Store {
    client: Client,
    /// For `RedisBackend::wait_replicated` after each write (`redis.wait_replicas`).
    backend: RedisBackend,
    prefix: Arc<str>,
    marker_ttl_ms: i64,
    cas: Arc<Script>,
    note_speculation: Arc<Script>,
    read: Arc<Script>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Store {
    /// A store on `backend`'s client, under its key prefix. Its once-per-message markers last
    /// as long as the backend's publish dedup (`redis.dedup_ttl`).
    pub fn new(backend: &RedisBackend) -> Self {
        let redis = &backend.config().redis;
        Store {
            client: backend.client().clone(),
            backend: backend.clone(),
            prefix: redis.key_prefix.as_str().into(),
            marker_ttl_ms: i64::try_from(redis.dedup_ttl.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            cas: Arc::new(Script::from_lua(CAS)),
            note_speculation: Arc::new(Script::from_lua(NOTE_SPECULATION)),
            read: Arc::new(Script::from_lua(READ)),
        }
    }

    /// A key of `queue`'s records: `<prefix>:st:{<queue>}:<rest>`.
    fn key(&self, queue: &str, rest: &str) -> String {
        format!("{}:st:{{{queue}}}:{rest}", self.prefix)
    }

    fn batch_key(&self, id: &str) -> String {
        self.key(queue_of(id), &format!("batch:{id}"))
    }

    fn request_key(&self, id: &str) -> String {
        self.key(queue_of(id), &format!("request:{id}"))
    }

    fn member_key(&self, queue: &str, kind: &str, state: &str) -> String {
        self.key(queue, &format!("{kind}s:{state}"))
    }

    fn revisions_key(&self, request: &str) -> String {
        self.key(queue_of(request), &format!("revisions:{request}"))
    }

    fn queues_key(&self) -> String {
        format!("{}:st:queues", self.prefix)
    }

    async fn cmd(&self, name: &'static str, args: Vec<Value>) -> Result<Value, StoreError> {
        self.client
            .custom::<Value, Value>(
                CustomCommand::new_static(name, ClusterHash::FirstKey, false),
                args,
            )
            .await
            .map_err(transport)
    }

    /// Register a queue.
    pub async fn add_queue(&self, queue: &str) -> Result<(), StoreError> {
        self.cmd("SADD", vec![self.queues_key().into(), queue.into()])
            .await
            .map(drop)
    }

    /// Whether `queue` is registered.
    pub async fn queue_exists(&self, queue: &str) -> Result<bool, StoreError> {
        let v = self
            .cmd("SISMEMBER", vec![self.queues_key().into(), queue.into()])
            .await?;
        Ok(v.as_i64() == Some(1))
    }

    /// Every registered queue.
    pub async fn queues(&self) -> Result<Vec<String>, StoreError> {
        let v = self.cmd("SMEMBERS", vec![self.queues_key().into()]).await?;
        let mut out: Vec<String> = v.into_array().iter().filter_map(Value::as_string).collect();
        out.sort();
        Ok(out)
    }

    async fn load<M: json::JsonMessage>(&self, key: String) -> Result<Option<M>, StoreError> {
        let v = self
            .cmd("HGET", vec![key.clone().into(), "d".into()])
            .await?;
        decode(&key, &v)
    }

    /// Read `reads`, one script per queue (a queue's keys share a slot): one reply per read, in
    /// order.
    async fn read_all(&self, reads: &[Read<'_>]) -> Result<Vec<Value>, StoreError> {
        let mut out = vec![Value::Null; reads.len()];
        for group in by_queue(reads.iter().map(|r| r.queue)) {
            let keys: Vec<String> = group.iter().map(|&i| reads[i].key.clone()).collect();
            let args: Vec<Value> = group
                .iter()
                .map(|&i| Value::from(if reads[i].list { "l" } else { "h" }))
                .collect();
            let values = self.run_read(keys, args).await?.into_array();
            if values.len() != group.len() {
                return Err(unexpected("store_read", values.len()));
            }
            for (i, v) in group.into_iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Run the read script as `EVALSHA_RO`, so that a user allowed only to read the records
    /// may run it (and a replica could), loading it first where the server does not know it.
    async fn run_read(&self, keys: Vec<String>, args: Vec<Value>) -> Result<Value, StoreError> {
        let mut call = vec![
            Value::from(self.read.sha1().clone()),
            Value::from(count(keys.len())),
        ];
        call.extend(keys.into_iter().map(Value::from));
        call.extend(args);
        // The first key, after the hash and the key count, picks the node.
        let command = CustomCommand::new_static("EVALSHA_RO", ClusterHash::Offset(2), false);
        match self
            .client
            .custom::<Value, Value>(command.clone(), call.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.read.load(&self.client).await.map_err(transport)?;
                self.client
                    .custom::<Value, Value>(command, call)
                    .await
                    .map_err(transport)
            }
            result => result.map_err(transport),
        }
    }

    /// Bump `record`'s version in what is written, and say where it belongs; the record itself
    /// keeps the version read until the write succeeds.
    fn stage<R: Record>(&self, record: &mut R) -> Result<Write, StoreError> {
        let what = format!("{} {}", R::KIND, echo(record.id()));
        let read_version = *record.version_mut();
        *record.version_mut() = read_version + 1;
        let data = json::to_vec(&*record);
        *record.version_mut() = read_version;
        let data = data
            .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?
            .into();
        let queue = record.queue();
        Ok(Write {
            key: self.key(queue, &format!("{}:{}", R::KIND, record.id())),
            sets: R::states()
                .iter()
                .map(|s| (self.member_key(queue, R::KIND, s), *s))
                .collect(),
            queue: queue.to_owned(),
            id: record.id().to_owned(),
            state: record.state_name(),
            what,
            read_version,
            data,
        })
    }

    /// Write each record if its stored version is the one read, move it into its state's set,
    /// and replace each list: one script per queue, which writes all of that queue's records
    /// and lists or none.
    async fn write_all(&self, writes: &[Write], lists: &[List<'_>]) -> Result<(), StoreError> {
        let queues = writes
            .iter()
            .map(|w| w.queue.as_str())
            .chain(lists.iter().map(|l| l.queue));
        for group in by_queue(queues) {
            let (records, replaced): (Vec<usize>, Vec<usize>) =
                group.into_iter().partition(|&i| i < writes.len());
            let mut keys = Vec::new();
            let mut args = vec![
                Value::from(count(records.len())),
                Value::from(count(replaced.len())),
            ];
            for &i in &records {
                let w = &writes[i];
                keys.push(w.key.clone());
                keys.extend(w.sets.iter().map(|(key, _)| key.clone()));
                args.extend([
                    Value::from(count(w.sets.len())),
                    Value::from(w.read_version.to_string()),
                    Value::from((w.read_version + 1).to_string()),
                    Value::Bytes(w.data.clone()),
                    Value::from(w.state),
                    Value::from(w.id.as_str()),
                ]);
                args.extend(w.sets.iter().map(|(_, state)| Value::from(*state)));
            }
            for &i in &replaced {
                let l = &lists[i - writes.len()];
                keys.push(l.key.clone());
                args.push(Value::from(count(l.items.len())));
                args.extend(l.items.iter().map(|item| Value::from(item.as_str())));
            }
            let first = keys[0].clone();
            let reply: Value = self
                .cas
                .evalsha_with_reload(&self.client, keys, args)
                .await
                .map_err(transport)?;
            let reply = reply.into_array();
            match reply.first().and_then(Value::as_i64) {
                Some(1) if reply.len() == records.len() + 1 => {}
                Some(0) => {
                    let at = reply.get(1).and_then(Value::as_usize).unwrap_or(1);
                    let what = records
                        .get(at.saturating_sub(1))
                        .map_or("a record", |&i| writes[i].what.as_str());
                    return Err(StoreError::Conflict(what.to_owned()));
                }
                _ => return Err(unexpected("store_cas", reply.len())),
            }
            // One wait covers the records, their membership and the lists (one slot, one
            // connection).
            self.backend
                .wait_replicated(&first)
                .await
                .map_err(StoreError::Transport)?;
        }
        Ok(())
    }

    /// Write `records` (see [`Store::update_batch`]), bumping their versions once written.
    async fn update<R: Record>(&self, records: &mut [R]) -> Result<(), StoreError> {
        let writes = records
            .iter_mut()
            .map(|r| self.stage(r))
            .collect::<Result<Vec<_>, _>>()?;
        self.write_all(&writes, &[]).await?;
        for r in records {
            *r.version_mut() += 1;
        }
        Ok(())
    }

    /// The batch `id`, if it exists.
    pub async fn batch(&self, id: &str) -> Result<Option<Batch>, StoreError> {
        self.load(self.batch_key(id)).await
    }

    /// The request `id`, if it exists.
    pub async fn request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        self.load(self.request_key(id)).await
    }

    /// The requests `ids`, in order (`None` for one that does not exist): one script per queue.
    pub async fn requests(&self, ids: &[String]) -> Result<Vec<Option<Request>>, StoreError> {
        let members = self.members(ids, false).await?;
        Ok(members.into_iter().map(|(r, _)| r).collect())
    }

    /// The batch `id` with its requests (and their revisions, when `revisions`), in one script
    /// when `named` (the requests a message named) are the ones its record lists; otherwise
    /// the record's requests are read after it. More than [`MAX_NAMED`] names are not read
    /// with the batch: a message cannot make a stage read more than that on its word.
    pub async fn batch_with_requests(
        &self,
        id: &str,
        named: &[String],
        revisions: bool,
    ) -> Result<Option<(Batch, Vec<Member>)>, StoreError> {
        let named = if named.len() <= MAX_NAMED { named } else { &[] };
        let mut reads = vec![Read::record(queue_of(id), self.batch_key(id))];
        reads.extend(self.member_reads(named, revisions));
        let values = self.read_all(&reads).await?;
        let Some(batch) = decode::<Batch>(&reads[0].key, &values[0])? else {
            return Ok(None);
        };
        let members = if batch.contains == named {
            members(&reads[1..], &values[1..], revisions)?
        } else {
            self.members(&batch.contains, revisions).await?
        };
        Ok(Some((batch, members)))
    }

    fn member_reads<'a>(&self, ids: &'a [String], revisions: bool) -> Vec<Read<'a>> {
        let mut reads = Vec::with_capacity(ids.len() * if revisions { 2 } else { 1 });
        for id in ids {
            reads.push(Read::record(queue_of(id), self.request_key(id)));
            if revisions {
                reads.push(Read::list(queue_of(id), self.revisions_key(id)));
            }
        }
        reads
    }

    /// The requests `ids`, in order, each with the revisions recorded for it when
    /// `revisions`: one script per queue.
    pub async fn members(
        &self,
        ids: &[String],
        revisions: bool,
    ) -> Result<Vec<Member>, StoreError> {
        let reads = self.member_reads(ids, revisions);
        let values = self.read_all(&reads).await?;
        members(&reads, &values, revisions)
    }

    /// Write `batch` if its stored version is still `batch.version`, bumping the version, and
    /// move its membership record from the state it had to its new one in the same script.
    pub async fn update_batch(&self, batch: &mut Batch) -> Result<(), StoreError> {
        self.update(std::slice::from_mut(batch)).await
    }

    /// Write `request` if its stored version is still `request.version` (see
    /// [`Store::update_batch`]).
    pub async fn update_request(&self, request: &mut Request) -> Result<(), StoreError> {
        self.update(std::slice::from_mut(request)).await
    }

    /// Write `requests` if each stored version is still the one read (see
    /// [`Store::update_batch`]): one script per queue, which writes all of its requests or
    /// none (a conflict on one leaves every one as it was).
    pub async fn update_requests(&self, requests: &mut [Request]) -> Result<(), StoreError> {
        self.update(requests).await
    }

    /// Put `id` in the set of `state` and in no other set of `kind` (pipelined).
    async fn repair_member(
        &self,
        queue: &str,
        kind: &str,
        id: &str,
        state: &str,
        all: &[&str],
    ) -> Result<(), StoreError> {
        let pipeline = self.client.pipeline();
        let command = |name| CustomCommand::new_static(name, ClusterHash::FirstKey, false);
        for other in all.iter().filter(|s| **s != state) {
            let args = vec![self.member_key(queue, kind, other).into(), id.into()];
            pipeline
                .custom::<(), Value>(command("SREM"), args)
                .await
                .map_err(transport)?;
        }
        let target = self.member_key(queue, kind, state);
        let args = vec![target.as_str().into(), id.into()];
        pipeline
            .custom::<(), Value>(command("SADD"), args)
            .await
            .map_err(transport)?;
        pipeline.all::<Value>().await.map_err(transport)?;
        self.backend
            .wait_replicated(&target)
            .await
            .map_err(StoreError::Transport)
    }

    /// Put the batch's membership record right: in its state's set and no other.
    pub async fn repair_batch_membership(&self, batch: &Batch) -> Result<(), StoreError> {
        self.repair_member(
            &batch.queue,
            "batch",
            &batch.id,
            batch.state().as_str_name(),
            &Batch::states(),
        )
        .await
    }

    /// Put the request's membership record right.
    pub async fn repair_request_membership(&self, request: &Request) -> Result<(), StoreError> {
        self.repair_member(
            &request.queue,
            "request",
            &request.id,
            request.state().as_str_name(),
            &Request::states(),
        )
        .await
    }

    /// Batch ids of `queue` in `state`, by the membership records.
    pub async fn batches_in(
        &self,
        queue: &str,
        state: BatchState,
    ) -> Result<Vec<String>, StoreError> {
        let v = self
            .cmd(
                "SMEMBERS",
                vec![self.member_key(queue, "batch", state.as_str_name()).into()],
            )
            .await?;
        let mut ids: Vec<String> = v.into_array().iter().filter_map(Value::as_string).collect();
        ids.sort();
        Ok(ids)
    }

    /// Record the revisions each request's step produced (idempotent): one script per queue,
    /// whose revision lists share a slot.
    pub async fn set_revisions(&self, revisions: &[(&str, Vec<String>)]) -> Result<(), StoreError> {
        self.write_all(&[], &self.revision_lists(revisions)).await
    }

    /// Write `batch` as [`Store::update_batch`] does and record `revisions` as
    /// [`Store::set_revisions`] does, in one script (the batch's requests are of its queue):
    /// both or neither.
    pub async fn update_batch_with_revisions(
        &self,
        batch: &mut Batch,
        revisions: &[(&str, Vec<String>)],
    ) -> Result<(), StoreError> {
        let write = self.stage(batch)?;
        self.write_all(&[write], &self.revision_lists(revisions))
            .await?;
        batch.version += 1;
        Ok(())
    }

    fn revision_lists<'a>(&self, revisions: &'a [(&'a str, Vec<String>)]) -> Vec<List<'a>> {
        revisions
            .iter()
            .map(|(request, items)| List {
                queue: queue_of(request),
                key: self.revisions_key(request),
                items,
            })
            .collect()
    }

    /// The revisions recorded for a request.
    pub async fn revisions(&self, request: &str) -> Result<Vec<String>, StoreError> {
        let v = self
            .cmd(
                "LRANGE",
                vec![self.revisions_key(request).into(), 0.into(), (-1).into()],
            )
            .await?;
        Ok(v.into_array().iter().filter_map(Value::as_string).collect())
    }

    /// Create `batch` and its requests (of its queue) in one script: fails, writing none,
    /// if any exists.
    pub async fn create(
        &self,
        batch: &mut Batch,
        requests: &mut [Request],
    ) -> Result<(), StoreError> {
        self.add_queue(&batch.queue).await?;
        let mut writes = requests
            .iter_mut()
            .map(|r| self.stage(r))
            .collect::<Result<Vec<_>, _>>()?;
        writes.push(self.stage(batch)?);
        self.write_all(&writes, &[]).await?;
        for r in requests {
            r.version += 1;
        }
        batch.version += 1;
        Ok(())
    }

    /// The next `n` numbers of a `kind` (`batch`, `request`) in `queue`, as the first of them:
    /// 1, 2, ... (never reused; one `INCRBY` reserves them all).
    pub async fn next_numbers(&self, queue: &str, kind: &str, n: u64) -> Result<u64, StoreError> {
        let key = self.key(queue, &format!("seq:{kind}"));
        let v = self
            .cmd("INCRBY", vec![key.into(), n.to_string().into()])
            .await?;
        v.as_u64()
            .and_then(|last| last.checked_sub(n))
            .map(|before| before + 1)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the {kind} counter of {} is not a number",
                    echo(queue)
                ))
            })
    }

    /// Count a wake-up of the speculate stage for `batch` of `queue`, once per message id: a
    /// redelivery of message `message_id` (within `redis.dedup_ttl`) is not counted again.
    /// Returns whether it was counted. (For the demo and tests.)
    pub async fn note_speculation(
        &self,
        queue: &str,
        batch: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let marker = self.key(
            queue,
            &format!("speculated:{}", fred::util::sha1_hash(message_id)),
        );
        let counted: i64 = self
            .note_speculation
            .evalsha_with_reload(
                &self.client,
                vec![self.key(queue, "speculations"), marker],
                vec![Value::from(self.marker_ttl_ms), Value::from(batch)],
            )
            .await
            .map_err(transport)?;
        Ok(counted == 1)
    }

    /// The batches whose completion woke the speculate stage, in order.
    pub async fn speculations(&self, queue: &str) -> Result<Vec<String>, StoreError> {
        let v = self
            .cmd(
                "LRANGE",
                vec![
                    self.key(queue, "speculations").into(),
                    0.into(),
                    (-1).into(),
                ],
            )
            .await?;
        Ok(v.into_array().iter().filter_map(Value::as_string).collect())
    }
}

/// A record of the store: a batch or a request.
trait Record: json::JsonMessage {
    /// Its kind, in its key and its sets' keys: `<kind>:<id>`, `<kind>s:<state>`.
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn queue(&self) -> &str;
    fn version_mut(&mut self) -> &mut i64;
    fn state_name(&self) -> &'static str;
    /// Every state of the kind: one membership set each.
    fn states() -> Vec<&'static str>;
}

/// `Record` for a record type with `id`, `queue`, `version` and a `state()` enum.
macro_rules! record {
    ($record:ty, $kind:literal, $states:expr) => {
        impl Record for $record {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn queue(&self) -> &str {
                &self.queue
            }
            fn version_mut(&mut self) -> &mut i64 {
                &mut self.version
            }
            fn state_name(&self) -> &'static str {
                self.state().as_str_name()
            }
            fn states() -> Vec<&'static str> {
                $states.iter().map(|s| s.as_str_name()).collect()
            }
        }
    };
}

record!(Batch, "batch", BATCH_STATES);
record!(Request, "request", REQUEST_STATES);

/// A record's write: the record as written (its version bumped), the version read, and its
/// membership: `id` of `queue` is in `state`, one of the states of `sets` (key, state).
struct Write {
    key: String,
    what: String,
    queue: String,
    id: String,
    read_version: i64,
    data: fred::bytes::Bytes,
    state: &'static str,
    sets: Vec<(String, &'static str)>,
}

/// A list of `queue` to replace with `items`.
struct List<'a> {
    queue: &'a str,
    key: String,
    items: &'a [String],
}

/// A key to read: a record's hash or a list, of `queue`.
struct Read<'a> {
    queue: &'a str,
    key: String,
    list: bool,
}

impl<'a> Read<'a> {
    fn record(queue: &'a str, key: String) -> Self {
        Read {
            queue,
            key,
            list: false,
        }
    }

    fn list(queue: &'a str, key: String) -> Self {
        Read {
            queue,
            key,
            list: true,
        }
    }
}

/// The positions of `queues`, grouped by queue in the order each first appears.
fn by_queue<'a>(queues: impl Iterator<Item = &'a str>) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, queue) in queues.enumerate() {
        match groups.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, at)) => at.push(i),
            None => groups.push((queue, vec![i])),
        }
    }
    groups.into_iter().map(|(_, at)| at).collect()
}

/// A batch's request as read (`None` when it does not exist), with its revisions when they were
/// read (else none).
pub type Member = (Option<Request>, Vec<String>);

/// The requests `reads` (each followed by its revisions list when `revisions`) read as `values`.
fn members(
    reads: &[Read<'_>],
    values: &[Value],
    revisions: bool,
) -> Result<Vec<Member>, StoreError> {
    let step = if revisions { 2 } else { 1 };
    reads
        .chunks(step)
        .zip(values.chunks(step))
        .map(|(r, v)| {
            let listed = if revisions {
                strings(&v[1])
            } else {
                Vec::new()
            };
            Ok((decode(&r[0].key, &v[0])?, listed))
        })
        .collect()
}

/// The record stored under `key`, from its `d` (`None` when there is none).
fn decode<M: json::JsonMessage>(key: &str, v: &Value) -> Result<Option<M>, StoreError> {
    let Some(bytes) = v.as_bytes() else {
        return Ok(None);
    };
    json::from_slice(bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", echo(key))))
}

/// The items of a list reply.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(Value::as_string).collect(),
        _ => Vec::new(),
    }
}

/// A script's reply of a shape it never sends.
fn unexpected(script: &str, len: usize) -> StoreError {
    StoreError::Transport(TransportError::new(
        TransportErrorKind::Other,
        format!("redis: unexpected reply from {script} ({len} elements)"),
    ))
}

const BATCH_STATES: [BatchState; 9] = [
    BatchState::Unspecified,
    BatchState::Creating,
    BatchState::Created,
    BatchState::Speculating,
    BatchState::Merging,
    BatchState::Succeeded,
    BatchState::Failed,
    BatchState::Cancelling,
    BatchState::Cancelled,
];

const REQUEST_STATES: [RequestState; 5] = [
    RequestState::Unspecified,
    RequestState::Queued,
    RequestState::Landed,
    RequestState::Error,
    RequestState::Cancelled,
];

/// Succeeded, failed or cancelled.
pub fn is_terminal(state: BatchState) -> bool {
    matches!(
        state,
        BatchState::Succeeded | BatchState::Failed | BatchState::Cancelled
    )
}

/// Terminal, or on its way to cancelled.
pub fn is_halted(state: BatchState) -> bool {
    is_terminal(state) || state == BatchState::Cancelling
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_char_boundary_with_a_marker() {
        assert!(matches!(cut("short", 10), Cow::Borrowed("short")));
        let long = "é".repeat(600);
        let cut_text = cut(&long, MAX_REASON);
        assert!(cut_text.len() <= MAX_REASON);
        assert!(cut_text.ends_with("é… [cut from 1200 bytes]"), "{cut_text}");
        // Every byte count lands on a boundary, whatever the width of the characters.
        for max in 30..60 {
            let text = format!("a{}", "€😀".repeat(20));
            let out = cut(&text, max);
            assert!(out.len() <= max, "{max}: {out}");
            assert!(out.ends_with(&format!(" [cut from {} bytes]", text.len())));
        }
        assert_eq!(
            prefixed("dead-lettered: ", &"x".repeat(2000)).len(),
            MAX_REASON
        );
        assert_eq!(prefixed("dead-lettered: ", "boom"), "dead-lettered: boom");
    }
}
