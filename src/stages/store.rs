//! Requests and batches in Redis, with optimistic concurrency.
//!
//! Each entity is a hash `kw:st:{<queue>}:<kind>:<id>` with fields `v` (version) and `d` (the
//! record as protobuf JSON). [`Store::update_batch`] and [`Store::update_request`] write only when the stored version equals the
//! version the caller read (one script: check, then write); a mismatch is a
//! [`StoreError::Conflict`], which stages turn into a retryable failure so the redelivery
//! re-reads. After a successful update, the per-queue, per-state membership sets
//! (`kw:st:{<queue>}:<kind>s:<state>`) are moved; they are written after the CAS, not with it,
//! and [`Store::repair_batch_membership`] puts them right from the record.

use fred::prelude::{Client, ClientLike, Value};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use keyway_runtime::json;
use keyway_runtime::transport::{TransportError, TransportErrorKind};

use crate::orchestrator::{Batch, BatchState, Request, RequestState};

/// Write the record only if the stored version is the one read. KEYS: 1 entity. ARGV: 1 the
/// version read (`0` for a new record), 2 the new version, 3 the record. Returns 1 when
/// written, 0 on a version mismatch.
const CAS: &str = r#"
local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
return 1
"#;

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
impl From<StoreError> for keyway_runtime::stub::HandlerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => keyway_runtime::stub::HandlerError::retryable(e.to_string()),
            StoreError::Transport(ref t) if t.is_retryable() => {
                keyway_runtime::stub::HandlerError::retryable(e.to_string())
            }
            _ => keyway_runtime::stub::HandlerError::permanent(e.to_string()),
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
    cas: std::sync::Arc<Script>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn batch_key(id: &str) -> String {
    format!("kw:st:{{{}}}:batch:{id}", queue_of(id))
}

fn request_key(id: &str) -> String {
    format!("kw:st:{{{}}}:request:{id}", queue_of(id))
}

fn member_key(queue: &str, kind: &str, state: &str) -> String {
    format!("kw:st:{{{queue}}}:{kind}s:{state}")
}

const QUEUES: &str = "kw:st:queues";

fn revisions_key(request: &str) -> String {
    format!("kw:st:{{{}}}:revisions:{request}", queue_of(request))
}

impl Store {
    /// A store on `client`.
    pub fn new(client: Client) -> Self {
        Store {
            client,
            cas: std::sync::Arc::new(Script::from_lua(CAS)),
        }
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
        self.cmd("SADD", vec![QUEUES.into(), queue.into()])
            .await
            .map(drop)
    }

    /// Whether `queue` is registered.
    pub async fn queue_exists(&self, queue: &str) -> Result<bool, StoreError> {
        let v = self
            .cmd("SISMEMBER", vec![QUEUES.into(), queue.into()])
            .await?;
        Ok(v.as_i64() == Some(1))
    }

    /// Every registered queue.
    pub async fn queues(&self) -> Result<Vec<String>, StoreError> {
        let v = self.cmd("SMEMBERS", vec![QUEUES.into()]).await?;
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
            .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
    }

    async fn write<M: json::JsonMessage>(
        &self,
        key: String,
        what: &str,
        read_version: i64,
        record: &M,
    ) -> Result<(), StoreError> {
        let data = json::to_vec(record).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
        let written: i64 = self
            .cas
            .evalsha_with_reload(
                &self.client,
                vec![key],
                vec![
                    Value::from(read_version.to_string()),
                    Value::from((read_version + 1).to_string()),
                    Value::Bytes(data.into()),
                ],
            )
            .await
            .map_err(transport)?;
        if written == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(what.to_owned()))
        }
    }

    /// The batch `id`, if it exists.
    pub async fn batch(&self, id: &str) -> Result<Option<Batch>, StoreError> {
        self.load(batch_key(id)).await
    }

    /// The request `id`, if it exists.
    pub async fn request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        self.load(request_key(id)).await
    }

    /// Write `batch` if its stored version is still `batch.version`, then bump the version and
    /// move its membership record.
    pub async fn update_batch(&self, batch: &mut Batch) -> Result<(), StoreError> {
        let read = batch.version;
        batch.version = read + 1;
        let result = self
            .write(
                batch_key(&batch.id),
                &format!("batch {}", batch.id),
                read,
                &*batch,
            )
            .await;
        if result.is_err() {
            batch.version = read;
            return result;
        }
        self.repair_batch_membership(batch).await
    }

    /// Write `request` if its stored version is still `request.version` (see
    /// [`Store::update_batch`]).
    pub async fn update_request(&self, request: &mut Request) -> Result<(), StoreError> {
        let read = request.version;
        request.version = read + 1;
        let result = self
            .write(
                request_key(&request.id),
                &format!("request {}", request.id),
                read,
                &*request,
            )
            .await;
        if result.is_err() {
            request.version = read;
            return result;
        }
        self.repair_request_membership(request).await
    }

    async fn move_member(
        &self,
        queue: &str,
        kind: &str,
        id: &str,
        state: &str,
        all: &[&str],
    ) -> Result<(), StoreError> {
        for other in all.iter().filter(|s| **s != state) {
            self.cmd(
                "SREM",
                vec![member_key(queue, kind, other).into(), id.into()],
            )
            .await?;
        }
        self.cmd(
            "SADD",
            vec![member_key(queue, kind, state).into(), id.into()],
        )
        .await
        .map(drop)
    }

    /// Put the batch's membership record right: in its state's set and no other.
    pub async fn repair_batch_membership(&self, batch: &Batch) -> Result<(), StoreError> {
        let all: Vec<&str> = BATCH_STATES.iter().map(|s| s.as_str_name()).collect();
        self.move_member(
            &batch.queue,
            "batch",
            &batch.id,
            batch.state().as_str_name(),
            &all,
        )
        .await
    }

    /// Put the request's membership record right.
    pub async fn repair_request_membership(&self, request: &Request) -> Result<(), StoreError> {
        let all: Vec<&str> = REQUEST_STATES.iter().map(|s| s.as_str_name()).collect();
        self.move_member(
            &request.queue,
            "request",
            &request.id,
            request.state().as_str_name(),
            &all,
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
                vec![member_key(queue, "batch", state.as_str_name()).into()],
            )
            .await?;
        let mut ids: Vec<String> = v.into_array().iter().filter_map(Value::as_string).collect();
        ids.sort();
        Ok(ids)
    }

    /// Record the revisions a request's step produced (idempotent).
    pub async fn set_revisions(
        &self,
        request: &str,
        revisions: &[String],
    ) -> Result<(), StoreError> {
        let key = revisions_key(request);
        self.cmd("DEL", vec![key.clone().into()]).await?;
        if revisions.is_empty() {
            return Ok(());
        }
        let mut args: Vec<Value> = vec![key.into()];
        args.extend(revisions.iter().map(|r| Value::from(r.as_str())));
        self.cmd("RPUSH", args).await.map(drop)
    }

    /// The revisions recorded for a request.
    pub async fn revisions(&self, request: &str) -> Result<Vec<String>, StoreError> {
        let v = self
            .cmd(
                "LRANGE",
                vec![revisions_key(request).into(), 0.into(), (-1).into()],
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
            .cmd("INCR", vec![format!("kw:st:{{{queue}}}:seq:{kind}").into()])
            .await?;
        v.as_u64().ok_or_else(|| {
            StoreError::Corrupt(format!("the {kind} counter of {queue} is not a number"))
        })
    }

    /// Count wake-ups of the speculate stage for a queue (for the demo and tests).
    pub async fn note_speculation(&self, queue: &str, batch: &str) -> Result<(), StoreError> {
        self.cmd(
            "RPUSH",
            vec![
                format!("kw:st:{{{queue}}}:speculations").into(),
                batch.into(),
            ],
        )
        .await
        .map(drop)
    }

    /// The batches whose completion woke the speculate stage, in order.
    pub async fn speculations(&self, queue: &str) -> Result<Vec<String>, StoreError> {
        let v = self
            .cmd(
                "LRANGE",
                vec![
                    format!("kw:st:{{{queue}}}:speculations").into(),
                    0.into(),
                    (-1).into(),
                ],
            )
            .await?;
        Ok(v.into_array().iter().filter_map(Value::as_string).collect())
    }
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
