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

/// Write the record only if the stored version is the one read, and move its id between the
/// membership sets. KEYS: 1 entity, then (optional) the kind's state sets. ARGV: 1 the version
/// read (`0` for a new record), 2 the new version, 3 the record, 4 its state's name, and when
/// sets are given 5 the record's id and 6… the state of each set, in `KEYS` order. Returns 0 on
/// a version mismatch; when written, the state the record had before: `""` for a new record,
/// `"?"` for one written without its state (before `s` was kept) and for this very write found
/// applied already (the client re-sends a command whose reply a reconnect lost: the write is
/// then a success). The id is moved with one `SMOVE` from the state the record had; when that
/// state is unknown, or its set does not hold the id, it is removed from every other set.
const CAS: &str = include_str!("lua/store_cas.lua");

/// Count a wake-up once per message. KEYS: 1 the queue's `speculations` list, 2 the message's
/// `speculated` marker. ARGV: 1 the marker's TTL (ms), 2 the batch. Returns 1 when counted, 0
/// when the message was counted before (a redelivery).
const NOTE_SPECULATION: &str = include_str!("lua/note_speculation.lua");

/// Replace lists. KEYS: the lists. ARGV: for each list in `KEYS` order, its number of items,
/// then the items. Returns the number of lists.
const SET_LISTS: &str = include_str!("lua/set_lists.lua");

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
    set_lists: Arc<Script>,
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
            set_lists: Arc::new(Script::from_lua(SET_LISTS)),
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
        let Some(bytes) = v.as_bytes().map(<[u8]>::to_vec) else {
            return Ok(None);
        };
        json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", echo(&key))))
    }

    /// Write `record` under `key` if its stored version is `read_version` and move it into its
    /// state's set (one script, one slot).
    async fn write<M: json::JsonMessage>(
        &self,
        key: String,
        what: &str,
        read_version: i64,
        record: &M,
        member: Member<'_>,
    ) -> Result<(), StoreError> {
        let data = json::to_vec(record).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
        let mut keys = vec![key.clone()];
        keys.extend(
            member
                .states
                .iter()
                .map(|s| self.member_key(member.queue, member.kind, s)),
        );
        let mut args = vec![
            Value::from(read_version.to_string()),
            Value::from((read_version + 1).to_string()),
            Value::Bytes(data.into()),
            Value::from(member.state),
            Value::from(member.id),
        ];
        args.extend(member.states.iter().map(|s| Value::from(*s)));
        let reply: Value = self
            .cas
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(transport)?;
        if reply.as_bytes().is_none() {
            return Err(StoreError::Conflict(what.to_owned()));
        }
        // One wait covers the record and its membership (one slot, one connection).
        self.backend
            .wait_replicated(&key)
            .await
            .map_err(StoreError::Transport)
    }

    /// The batch `id`, if it exists.
    pub async fn batch(&self, id: &str) -> Result<Option<Batch>, StoreError> {
        self.load(self.batch_key(id)).await
    }

    /// The request `id`, if it exists.
    pub async fn request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        self.load(self.request_key(id)).await
    }

    /// Write `batch` if its stored version is still `batch.version`, bumping the version, and
    /// move its membership record from the state it had to its new one in the same script.
    pub async fn update_batch(&self, batch: &mut Batch) -> Result<(), StoreError> {
        let read = batch.version;
        batch.version = read + 1;
        let result = self
            .write(
                self.batch_key(&batch.id),
                &format!("batch {}", echo(&batch.id)),
                read,
                &*batch,
                Member {
                    queue: &batch.queue,
                    kind: "batch",
                    id: &batch.id,
                    state: batch.state().as_str_name(),
                    states: &batch_states(),
                },
            )
            .await;
        if result.is_err() {
            batch.version = read;
        }
        result
    }

    /// Write `request` if its stored version is still `request.version` (see
    /// [`Store::update_batch`]).
    pub async fn update_request(&self, request: &mut Request) -> Result<(), StoreError> {
        let read = request.version;
        request.version = read + 1;
        let result = self
            .write(
                self.request_key(&request.id),
                &format!("request {}", echo(&request.id)),
                read,
                &*request,
                Member {
                    queue: &request.queue,
                    kind: "request",
                    id: &request.id,
                    state: request.state().as_str_name(),
                    states: &request_states(),
                },
            )
            .await;
        if result.is_err() {
            request.version = read;
        }
        result
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
            &batch_states(),
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
            &request_states(),
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
        let mut by_queue: Vec<(&str, Vec<String>, Vec<Value>)> = Vec::new();
        for (request, list) in revisions {
            let queue = queue_of(request);
            let at = match by_queue.iter().position(|(q, _, _)| *q == queue) {
                Some(at) => at,
                None => {
                    by_queue.push((queue, Vec::new(), Vec::new()));
                    by_queue.len() - 1
                }
            };
            let (_, keys, args) = &mut by_queue[at];
            keys.push(self.revisions_key(request));
            args.push(Value::from(count(list.len())));
            args.extend(list.iter().map(|r| Value::from(r.as_str())));
        }
        for (_, keys, args) in by_queue {
            let key = keys[0].clone();
            self.set_lists
                .evalsha_with_reload::<Value, _, _>(&self.client, keys, args)
                .await
                .map_err(transport)?;
            self.backend
                .wait_replicated(&key)
                .await
                .map_err(StoreError::Transport)?;
        }
        Ok(())
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

    /// Create `batch` and its requests: fails if any exists.
    pub async fn create(
        &self,
        batch: &mut Batch,
        requests: &mut [Request],
    ) -> Result<(), StoreError> {
        self.add_queue(&batch.queue).await?;
        for r in requests.iter_mut() {
            self.update_request(r).await?;
        }
        self.update_batch(batch).await
    }

    /// The next number of a `kind` (`batch`, `request`) in `queue`: 1, 2, ... (never reused).
    pub async fn next_number(&self, queue: &str, kind: &str) -> Result<u64, StoreError> {
        let v = self
            .cmd("INCR", vec![self.key(queue, &format!("seq:{kind}")).into()])
            .await?;
        v.as_u64().ok_or_else(|| {
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

/// A record's place in the membership sets: `id` of `kind` in `queue` is in `state`, one of
/// `states`.
struct Member<'a> {
    queue: &'a str,
    kind: &'a str,
    id: &'a str,
    state: &'a str,
    states: &'a [&'a str],
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

fn batch_states() -> Vec<&'static str> {
    BATCH_STATES.iter().map(|s| s.as_str_name()).collect()
}

fn request_states() -> Vec<&'static str> {
    REQUEST_STATES.iter().map(|s| s.as_str_name()).collect()
}

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
