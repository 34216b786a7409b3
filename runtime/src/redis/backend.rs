//! The Redis Streams backend: publishing through the dedup script, and the consume loop that
//! drives a [`Handler`] with the claim and settle scripts.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, Client, ReconnectPolicy, Value};
use fred::prelude::{
    ClientLike, Config as FredConfig, Error as FredError, ErrorKind as FredErrorKind,
    EventInterface, Server, ServerConfig,
};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::config::{
    check_subscription, redact_url, uses_tls, Config, ConfigError, EvictionCheck, RedisConfig,
    SubscriptionConfig, DEAD_LETTER_SUFFIX,
};
use super::{scripts, tls};
use crate::metrics::Metrics;
use crate::topic::is_valid_topic_name;
use crate::transport::{
    BoxFuture, Delivery, Failure, Handler, Lease, Metadata, Outcome, OutgoingMessage,
    PublishReceipt, Publisher, TransportError, TransportErrorKind,
};

/// The hash tag of a stream: its name without `_dlq` suffixes, so a stream, its dead-letter
/// stream and every group's keys share one hash slot.
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

fn stream_key(prefix: &str, stream: &str) -> String {
    format!("{prefix}:{{{}}}:s:{stream}", hash_tag(stream))
}

fn dedup_key(prefix: &str, stream: &str, partition_key: &str, id: &str) -> String {
    format!(
        "{prefix}:{{{}}}:d:{stream}:{}:{partition_key}:{id}",
        hash_tag(stream),
        partition_key.len()
    )
}

/// The nine keys of a group script, in the order `scripts` documents, and the group's wake-up
/// stream.
#[derive(Debug, Clone)]
struct GroupKeys {
    keys: Vec<String>,
    /// `kw:{s}:g:<stream>:<group>:wake`: a stream of at most one entry, added to by every
    /// consume loop of the group as it stops (it may have released what it had in flight,
    /// promoted the next entry of a key, or been about to claim), so the group's other loops,
    /// which may be sleeping until their own next due time, claim at once. Only the wake-up
    /// reads look at it; it is never trimmed below its one entry nor consumed.
    wake: String,
    /// The bucket, for a stream of a topic in buckets (`<stream>#<bucket>`).
    bucket: Option<String>,
}

impl GroupKeys {
    fn new(prefix: &str, stream: &str, group: &str) -> Self {
        let tag = hash_tag(stream);
        let bucket = tag.rsplit_once('#').map(|(_, b)| b.to_owned());
        let g = |part: &str| format!("{prefix}:{{{tag}}}:g:{stream}:{group}:{part}");
        GroupKeys {
            keys: vec![
                stream_key(prefix, stream),
                g("heads"),
                g("waiting"),
                g("due"),
                g("held"),
                g("attempts"),
                g("errors"),
                g("pks"),
                stream_key(prefix, &format!("{stream}{DEAD_LETTER_SUFFIX}")),
            ],
            wake: g("wake"),
            bucket,
        }
    }

    fn stream(&self) -> &str {
        &self.keys[0]
    }

    fn held(&self) -> &str {
        &self.keys[4]
    }
}

/// Map a client error to a transport error, keeping what a caller can act on.
fn transport_error(e: FredError) -> TransportError {
    let details = e.details();
    let kind = match e.kind() {
        FredErrorKind::IO | FredErrorKind::Canceled => TransportErrorKind::Connection,
        FredErrorKind::Timeout => TransportErrorKind::Timeout,
        _ if [
            "LOADING",
            "BUSY",
            "TRYAGAIN",
            "CLUSTERDOWN",
            "MASTERDOWN",
            "READONLY",
        ]
        .iter()
        .any(|p| details.starts_with(p)) =>
        {
            TransportErrorKind::Busy
        }
        FredErrorKind::InvalidArgument | FredErrorKind::InvalidCommand => {
            TransportErrorKind::Invalid
        }
        _ => TransportErrorKind::Other,
    };
    TransportError::new(kind, format!("redis: {e}"))
}

fn protocol_error(what: &str) -> TransportError {
    TransportError::new(
        TransportErrorKind::Other,
        format!("redis: unexpected reply to {what}"),
    )
}

/// The longest delay handed to a script (a postponement, a backoff): a year. Configured values
/// are range-checked; this bounds the ones a handler returns.
const MAX_DELAY: Duration = Duration::from_secs(365 * 86_400);

/// `d` in whole milliseconds, as a script argument; at most [`MAX_DELAY`], so the server's
/// `now + delay` arithmetic cannot overflow.
fn millis(d: Duration) -> i64 {
    d.min(MAX_DELAY).as_millis() as i64
}

/// The longest a consume loop goes without claiming while its wake-up read works and nothing
/// it knows of is due sooner: the bound on how late it claims an entry another consumer made
/// due and cannot claim itself (it crashed, or has no room).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// The same while the wake-up read does not work, or a claim cannot tell when the group's
/// pending entries expire (W3 in `scripts.rs`).
const POLL: Duration = Duration::from_secs(1);

/// The sooner of two optional delays.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A count as a script argument (counts are range-checked; this only cannot wrap).
fn count_arg(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn invalid(e: ConfigError) -> TransportError {
    TransportError::new(TransportErrorKind::Invalid, e.to_string())
}

/// A message as stored in a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The stream entry id.
    pub entry: String,
    /// The message id.
    pub id: String,
    /// Its partition key.
    pub partition_key: String,
    /// When it was published (ms since the epoch, server clock).
    pub published_at_ms: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// Its metadata.
    pub metadata: Metadata,
}

/// What the server reported at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// `maxmemory-policy`, when `CONFIG GET` is allowed.
    pub maxmemory_policy: Option<String>,
    /// `appendonly`.
    pub appendonly: Option<String>,
    /// `appendfsync`.
    pub appendfsync: Option<String>,
    /// Problems found, each one line.
    pub warnings: Vec<String>,
}

/// Stops consume loops: trigger it, and each loop stops reading and finishes or releases what
/// it has in flight within the configured deadline.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending half of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Wait until shutdown is triggered (or its trigger is dropped).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    /// Ask every loop holding the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

/// Look after one group. KEYS: 1 stream, 2 the group's `held`. ARGV: 1 group, 2 the calling
/// consumer, 3 idle threshold (ms).
/// - Removes every other consumer that has no pending entries and has been idle at least the
///   threshold (`XINFO CONSUMERS` `idle`: on Redis 7.0 since it was last handed an entry, on
///   7.2 and later since it last tried to read or claim). `XGROUP DELCONSUMER` drops a
///   consumer's pending entries with it, so one that has any is never removed: the claim
///   script hands them to a live consumer once they are idle past the visibility timeout, and
///   the consumer goes on a later pass. Checking and removing happen in this one script, so no
///   entry can be claimed in between. A live consumer removed while it had nothing to do is
///   harmless: Redis adds it again when it is next handed an entry.
/// - Reports the group's health: `{removed names, consumers left, pending, lag, held}`; lag is
///   `-1` when Redis cannot tell (after deletions, or before 7.0).
const TEND: &str = include_str!("../../lua/tend.lua");

struct Scripts {
    publish: Script,
    claim: Script,
    recover: Script,
    settle: Script,
    trim: Script,
    tend: Script,
}

struct Inner {
    client: Client,
    connection: Connection,
    config: Config,
    metrics: Arc<Metrics>,
    scripts: Scripts,
    consumers: AtomicU64,
    /// Streams whose newest entry this backend has checked for its protocol version.
    checked: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The Redis Streams backend. Cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &redact_url(&self.inner.config.redis.url))
            .finish()
    }
}

/// How to reach the server, prepared once per backend and shared by all its connections: the
/// client configuration with TLS and credentials applied, and what an error may show.
#[derive(Clone)]
struct Connection {
    fred: FredConfig,
    /// The URL without its password.
    shown: String,
    /// Where the password came from, when not from the URL.
    password_origin: Option<String>,
}

/// `url` with a plaintext scheme: the client library is given TLS settings of our own
/// instead of the defaults it would build for `rediss`.
fn without_tls_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.to_ascii_lowercase().starts_with("rediss") => {
            format!("redis{}://{rest}", &scheme["rediss".len()..])
        }
        _ => url.to_owned(),
    }
}

impl Connection {
    /// The connection for `redis`, which [`RedisConfig::check`] has passed.
    fn prepare(redis: &RedisConfig) -> Result<Connection, TransportError> {
        let url = &redis.url;
        let shown = redact_url(url);
        let tls = uses_tls(url);
        if let (false, Some(key)) = (tls, redis.tls_keys_set().first()) {
            return Err(invalid(ConfigError::new(
                key,
                format!(
                    "is set, but redis.url {shown} is plaintext: use rediss:// for TLS (or remove the key)"
                ),
            )));
        }
        let mut fred = FredConfig::from_url(&without_tls_scheme(url)).map_err(|e| {
            TransportError::new(
                TransportErrorKind::Invalid,
                format!("redis url {shown}: {}", e.details()),
            )
        })?;
        if let Some(user) = &redis.username {
            fred.username = Some(user.clone());
        }
        let password = redis.resolve_password().map_err(invalid)?;
        let password_origin = password.as_ref().map(|p| p.origin().to_owned());
        if let Some(password) = password {
            fred.password = Some(password.expose().to_owned());
        }
        if tls {
            fred.tls = Some(tls::tls_config(redis).map_err(invalid)?);
            if let Some(name) = &redis.tls_server_name {
                let set = |server: &mut Server| server.tls_server_name = Some(name.as_str().into());
                #[allow(unreachable_patterns)]
                match &mut fred.server {
                    ServerConfig::Centralized { server } => set(server),
                    ServerConfig::Clustered { hosts, .. }
                    | ServerConfig::Sentinel { hosts, .. } => hosts.iter_mut().for_each(set),
                    _ => {}
                }
            }
        }
        Ok(Connection {
            fred,
            shown,
            password_origin,
        })
    }
}

/// How long connecting (TCP, TLS handshake, authentication) may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect_client(connection: &Connection) -> Result<Client, TransportError> {
    let shown = &connection.shown;
    let client = Builder::from_config(connection.fred.clone())
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = CONNECTION_TIMEOUT;
            c.max_command_attempts = 3;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(10);
        })
        .build()
        .map_err(transport_error)?;
    if let Err(e) = client.init().await {
        // With `fail_fast` (the default) a failed first connection ends the client's task: it
        // does not keep retrying in the background.
        let tls = connection.fred.tls.is_some();
        let mut message = format!("cannot connect to Redis at {shown}: ");
        match e.kind() {
            FredErrorKind::Timeout if tls => message.push_str(&format!(
                "no TLS handshake within {} (is it a plaintext port? use redis:// for one)",
                super::config::format_duration(CONNECTION_TIMEOUT)
            )),
            FredErrorKind::Timeout => message.push_str(&format!(
                "no answer within {}",
                super::config::format_duration(CONNECTION_TIMEOUT)
            )),
            _ => message.push_str(&readable(&e)),
        }
        let closed = ["reset by peer", "closed", "broken pipe", "unexpected eof"];
        let detail = e.details().to_ascii_lowercase();
        if !tls && closed.iter().any(|c| detail.contains(c)) {
            message.push_str(" (is it a TLS port? use rediss:// for one)");
        }
        let auth = [
            "WRONGPASS",
            "NOAUTH",
            "NOPERM",
            "invalid password",
            "invalid username",
        ];
        if auth.iter().any(|p| e.details().contains(p)) {
            match &connection.password_origin {
                Some(origin) => message.push_str(&format!(" (password from {origin})")),
                None if connection.fred.password.is_some() => {
                    message.push_str(" (password from redis.url)")
                }
                None => message.push_str(
                    " (no password given: set redis.password_file, REDIS_PASSWORD_FILE or REDIS_PASSWORD)",
                ),
            }
        }
        return Err(TransportError::new(transport_error(e).kind(), message));
    }
    Ok(client)
}

/// A fred error as one line: a TLS failure said as what to check, an I/O error's own message
/// (`connection refused`) rather than the `Debug` form fred keeps of it.
fn readable(e: &FredError) -> String {
    let details = e.details();
    if let Some(tls) = tls::explain_handshake(details) {
        return tls;
    }
    let line = match details.split_once("message: \"") {
        Some((_, rest)) => rest.split('"').next().unwrap_or(rest).to_ascii_lowercase(),
        None if details.is_empty() => format!("{:?} error", e.kind()).to_ascii_lowercase(),
        None => details.to_owned(),
    };
    line.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

impl RedisBackend {
    /// Connect and run the preflight checks: refuse to start when the eviction policy is not
    /// `noeviction` and the configuration says to refuse; otherwise log what was found.
    pub async fn connect(config: Config) -> Result<(RedisBackend, Preflight), TransportError> {
        config.check().map_err(invalid)?;
        let connection = Connection::prepare(&config.redis)?;
        let client = connect_client(&connection).await?;
        let backend = RedisBackend {
            inner: Arc::new(Inner {
                client,
                connection,
                config,
                metrics: Arc::new(Metrics::new()),
                scripts: Scripts {
                    publish: Script::from_lua(scripts::PUBLISH),
                    claim: Script::from_lua(scripts::claim()),
                    recover: Script::from_lua(scripts::recover()),
                    settle: Script::from_lua(scripts::settle()),
                    trim: Script::from_lua(scripts::TRIM),
                    tend: Script::from_lua(TEND),
                },
                consumers: AtomicU64::new(0),
                checked: Default::default(),
            }),
        };
        let preflight = backend.preflight().await;
        for warning in &preflight.warnings {
            tracing::warn!("{warning}");
        }
        if backend.inner.config.redis.eviction_policy == EvictionCheck::Refuse
            && preflight.maxmemory_policy.as_deref() != Some("noeviction")
        {
            return Err(TransportError::new(
                TransportErrorKind::Invalid,
                format!(
                    "refusing to start: maxmemory-policy is {:?}, not \"noeviction\" (an evicted dedup key is a silent duplicate, an evicted stream is lost data)",
                    preflight.maxmemory_policy.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        Ok((backend, preflight))
    }

    /// Counters and latency histograms of this backend.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The client, for operations outside the queue model (tests, tools).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    async fn command(&self, cmd: &'static str, args: Vec<Value>) -> Result<Value, TransportError> {
        self.inner
            .client
            .custom(
                CustomCommand::new_static(cmd, ClusterHash::FirstKey, false),
                args,
            )
            .await
            .map_err(transport_error)
    }

    /// When `redis.wait_replicas` asks for it, wait until that many replicas have every write
    /// this backend's connection to `key`'s master has made (`WAIT`, sent on that same
    /// connection, so it follows the write it is meant for). Fewer replicas within
    /// `redis.wait_timeout` is a retryable error: the write stays on the master but may not
    /// survive its failover. Stages call this after their own store writes.
    pub async fn wait_replicated(&self, key: &str) -> Result<(), TransportError> {
        let redis = &self.inner.config.redis;
        if redis.wait_replicas == 0 {
            return Ok(());
        }
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let reply = self
            .inner
            .client
            .custom::<Value, Value>(
                CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false),
                vec![
                    i64::from(redis.wait_replicas).into(),
                    millis(redis.wait_timeout).into(),
                ],
            )
            .await
            .map_err(transport_error)?;
        let acked = as_number(&reply).ok_or_else(|| protocol_error("WAIT"))?;
        self.inner.metrics.count(
            "keyway_replication_waits_total",
            &[(
                "result",
                if acked >= i64::from(redis.wait_replicas) {
                    "ok"
                } else {
                    "short"
                },
            )],
            1,
        );
        if acked < i64::from(redis.wait_replicas) {
            return Err(TransportError::new(
                TransportErrorKind::Timeout,
                format!(
                    "a write to {key} reached {acked} of {} replicas within {} (redis.wait_replicas, \
                     redis.wait_timeout); it may not survive a failover",
                    redis.wait_replicas,
                    super::config::format_duration(redis.wait_timeout)
                ),
            ));
        }
        Ok(())
    }

    /// On first use of `stream_key` by this backend: refuse a stream whose newest entry was
    /// written by another protocol version.
    async fn check_stream_version(&self, stream_key: &str) -> Result<(), TransportError> {
        let seen = |inner: &Inner| {
            inner
                .checked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(stream_key)
        };
        if seen(&self.inner) {
            return Ok(());
        }
        let newest = self
            .command(
                "XREVRANGE",
                vec![
                    stream_key.into(),
                    "+".into(),
                    "-".into(),
                    "COUNT".into(),
                    "1".into(),
                ],
            )
            .await?;
        if let Some(entry) = newest.into_array().into_iter().next() {
            let mut parts = entry.into_array().into_iter();
            let id = parts.next().as_ref().and_then(as_text).unwrap_or_default();
            let fields = entry_fields(parts.next().unwrap_or(Value::Array(Vec::new())))?;
            check_version(stream_key, &id, &fields)?;
        }
        self.inner
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream_key.to_owned());
        Ok(())
    }

    async fn config_get(&self, name: &str) -> Option<String> {
        let reply = self
            .command("CONFIG", vec!["GET".into(), name.into()])
            .await
            .ok()?;
        match reply {
            Value::Array(items) => items.get(1).and_then(Value::as_string),
            Value::Map(map) => map.inner().values().next().and_then(Value::as_string),
            _ => None,
        }
    }

    /// Read the server settings that decide whether data can be lost.
    pub async fn preflight(&self) -> Preflight {
        let mut p = Preflight {
            maxmemory_policy: self.config_get("maxmemory-policy").await,
            appendonly: self.config_get("appendonly").await,
            appendfsync: self.config_get("appendfsync").await,
            warnings: Vec::new(),
        };
        match p.maxmemory_policy.as_deref() {
            Some("noeviction") => {}
            Some(policy) => p.warnings.push(format!(
                "maxmemory-policy is {policy:?}: under memory pressure Redis may evict dedup keys (silent duplicates) or streams (lost messages); use \"noeviction\""
            )),
            None => p.warnings.push(
                "could not read maxmemory-policy (CONFIG GET refused?): make sure it is \"noeviction\"".into(),
            ),
        }
        match (p.appendonly.as_deref(), p.appendfsync.as_deref()) {
            (Some("yes"), Some("always")) => {}
            (Some("yes"), Some(fsync)) => p.warnings.push(format!(
                "appendfsync is {fsync:?}: a crash can lose up to a second of acknowledged publishes and acks"
            )),
            (Some("no"), _) => p.warnings.push(
                "appendonly is off: a restart loses every message the server holds".into(),
            ),
            _ => {}
        }
        p
    }

    fn not_registered(topic: &str) -> TransportError {
        TransportError::new(
            TransportErrorKind::Invalid,
            format!("topic key {topic:?} is not in the registry"),
        )
    }

    /// Every stream of `topic`, one per bucket.
    fn streams_of(&self, topic: &str) -> Result<Vec<String>, TransportError> {
        self.inner
            .config
            .registry
            .streams(topic)
            .ok_or_else(|| Self::not_registered(topic))
    }

    /// The stream a message of `topic` with `partition_key` goes to.
    fn stream_for(&self, topic: &str, partition_key: &str) -> Result<String, TransportError> {
        self.inner
            .config
            .registry
            .stream_for(topic, partition_key)
            .ok_or_else(|| Self::not_registered(topic))
    }

    /// Run `handler` on the deliveries of subscription `sub` until `shutdown`; then finish or
    /// release what is in flight within the shutdown deadline.
    pub async fn run<H: Handler + 'static>(
        &self,
        sub: SubscriptionConfig,
        handler: Arc<H>,
        shutdown: Shutdown,
    ) -> Result<(), TransportError> {
        if !is_valid_topic_name(&sub.group) {
            return Err(TransportError::new(
                TransportErrorKind::Invalid,
                format!(
                    "consumer group {:?} is not a valid name ([a-z0-9_-]{{1,255}})",
                    sub.group
                ),
            ));
        }
        check_subscription("subscription", &sub).map_err(|e| {
            let key = e.key().strip_prefix("subscription.").unwrap_or(e.key());
            TransportError::new(
                TransportErrorKind::Invalid,
                format!(
                    "subscription to {:?} as group {:?}: `{key}`: {}",
                    sub.topic,
                    sub.group,
                    e.message()
                ),
            )
        })?;
        let streams = self.streams_of(&sub.topic)?;
        if let [stream] = &streams[..] {
            return self
                .run_stream(sub, handler, shutdown, stream.clone())
                .await;
        }
        // A topic in buckets: one loop per bucket's stream, sharing the deliveries in flight.
        let mut sub = sub;
        sub.batch_size = sub.batch_size.div_ceil(streams.len()).max(1);
        let mut loops = JoinSet::new();
        for stream in streams {
            let (backend, sub, handler) = (self.clone(), sub.clone(), handler.clone());
            let shutdown = shutdown.clone();
            loops.spawn(async move { backend.run_stream(sub, handler, shutdown, stream).await });
        }
        let mut result = Ok(());
        while let Some(done) = loops.join_next().await {
            let ended = done.unwrap_or_else(|e| {
                Err(TransportError::new(
                    TransportErrorKind::Other,
                    format!("a bucket's consume loop ended: {e}"),
                ))
            });
            if let (Ok(()), Err(e)) = (&result, ended) {
                result = Err(e);
            }
        }
        result
    }

    /// The consume loop of one stream of `sub`'s topic.
    async fn run_stream<H: Handler + 'static>(
        &self,
        sub: SubscriptionConfig,
        handler: Arc<H>,
        mut shutdown: Shutdown,
        stream: String,
    ) -> Result<(), TransportError> {
        let keys = Arc::new(GroupKeys::new(
            &self.inner.config.redis.key_prefix,
            &stream,
            &sub.group,
        ));
        self.check_stream_version(keys.stream()).await?;
        self.ensure_group(keys.stream(), &sub.group).await?;
        let consumer: Arc<str> = format!(
            "c-{}-{}-{}",
            std::process::id(),
            self.inner.consumers.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        )
        .into();
        let sub = Arc::new(sub);
        let ctx = Arc::new(LoopContext {
            backend: self.clone(),
            keys: keys.clone(),
            sub: sub.clone(),
            consumer: consumer.clone(),
        });

        // Wake-ups for new entries and for the group's wake-up stream, from a blocking read on
        // a connection of its own. While that read does not work, the loop polls.
        let notify = Arc::new(Notify::new());
        let listening = Arc::new(AtomicBool::new(false));
        let waker = AbortOnDrop(tokio::spawn(wake_on_new_entries(
            self.inner.connection.clone(),
            [keys.stream().to_owned(), keys.wake.clone()],
            notify.clone(),
            listening.clone(),
        )));

        // A reconnect can lose the reply to a claim that ran, leaving entries pending here
        // that nobody works on: look for them after every reconnect, not only now and then.
        let mut reconnects = self.inner.client.reconnect_rx();

        let mut tasks: JoinSet<Option<Duration>> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, (String, u64)> = HashMap::new();
        let mut recover_due = Instant::now();
        let recover_every = (sub.visibility_timeout / 2).max(Duration::from_millis(200));
        let mut trim_due = Instant::now() + self.inner.config.redis.trim_interval;
        let mut error_backoff = Duration::from_millis(50);
        // When to claim next. A claim runs only when it may find something: at once while the
        // last one says it left work (W2 in `scripts.rs`), when a settle of this loop made an
        // entry claimable (W1), when the wake-up read sees new entries or a wake-up, when the
        // first known due entry is due or the first pending entry may expire (W3); and at least
        // every `idle_poll` (`POLL` while the wake-up read does not work), for due entries
        // other consumers scheduled and cannot claim themselves (they crashed, or have no room).
        let mut claim_at = Instant::now();
        // No longer than a visibility timeout (but not below `POLL`): an entry another
        // consumer claims after one of this loop's claims is then in the PEL at a later claim,
        // which learns when it expires (W3), unless it expires within `POLL`.
        let idle_poll = IDLE_POLL.min(sub.visibility_timeout.max(POLL));
        // When a claim next scans the PEL for entries past the visibility timeout (W3): a scan
        // says when the first pending entry may expire, and an expiry only moves later, so the
        // claims before then skip the scan.
        let mut scan_at = Instant::now();

        // An entry of another protocol version stops the loop (see `check_version`): what is
        // in flight is finished or released as on shutdown, and the entry stays pending for a
        // consumer that speaks its version.
        let mut incompatible = None;
        while !shutdown.is_triggered() && incompatible.is_none() {
            let mut failed = None;
            if reconnected(&mut reconnects) {
                recover_due = Instant::now();
                claim_at = Instant::now();
                scan_at = Instant::now();
            }
            // This consumer's own pending entries that nobody here works on (a claim whose
            // reply was lost in a reconnect): now and then, after a reconnect, and after any
            // error.
            if Instant::now() >= recover_due && tasks.len() < sub.batch_size {
                recover_due = Instant::now() + recover_every;
                let busy: Vec<String> = in_flight.values().map(|(id, _)| id.clone()).collect();
                match ctx.recover(sub.batch_size - tasks.len(), &busy).await {
                    Ok(deliveries) => {
                        for d in deliveries {
                            if let Err(e) = check_version(ctx.keys.stream(), &d.entry, &d.fields) {
                                incompatible = Some(e);
                                break;
                            }
                            spawn_delivery(&mut tasks, &mut in_flight, &ctx, &handler, d);
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            // Refill in batches, not one slot at a time: a claim costs the same for one entry
            // as for many.
            let free = sub.batch_size.saturating_sub(tasks.len());
            let refill = free >= sub.batch_size.div_ceil(4) || tasks.is_empty();
            if refill && failed.is_none() && Instant::now() >= claim_at {
                let scan = Instant::now() >= scan_at;
                match ctx.claim(free, scan).await {
                    Ok(claim) => {
                        if scan {
                            scan_at = Instant::now() + claim.scan_again(sub.visibility_timeout);
                        }
                        let most = if listening.load(Ordering::SeqCst) {
                            idle_poll
                        } else {
                            POLL
                        };
                        let until_scan = scan_at.saturating_duration_since(Instant::now());
                        let wait = claim
                            .wait(until_scan)
                            .map_or(Duration::ZERO, |w| w.min(most));
                        claim_at = Instant::now() + wait;
                        for d in claim.deliveries {
                            if let Err(e) = check_version(ctx.keys.stream(), &d.entry, &d.fields) {
                                incompatible = Some(e);
                                break;
                            }
                            spawn_delivery(&mut tasks, &mut in_flight, &ctx, &handler, d);
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                tracing::warn!(topic = %sub.topic, group = %sub.group, "reading deliveries failed: {e}");
                recover_due = Instant::now() + error_backoff;
                claim_at = recover_due;
                scan_at = recover_due;
                error_backoff = (error_backoff * 2).min(Duration::from_secs(2));
            } else {
                error_backoff = Duration::from_millis(50);
            }
            if Instant::now() >= trim_due {
                trim_due = Instant::now() + self.inner.config.redis.trim_interval;
                if let Err(e) = self.trim(&stream).await {
                    tracing::warn!(stream = %stream, "trimming failed: {e}");
                }
                if let Err(e) = ctx.tend().await {
                    tracing::warn!(topic = %sub.topic, group = %sub.group, "looking after the group failed: {e}");
                }
            }
            let can_refill =
                tasks.len() + sub.batch_size.div_ceil(4) <= sub.batch_size || tasks.is_empty();
            if incompatible.is_some() || (can_refill && Instant::now() >= claim_at) {
                continue;
            }
            let wake_at = claim_at.min(recover_due).min(trim_due);
            tokio::select! {
                done = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let mut due_in = finished(&ctx, done, &mut in_flight).await;
                    while let Some(done) = tasks.try_join_next_with_id() {
                        let next = finished(&ctx, Some(done), &mut in_flight).await;
                        due_in = sooner(due_in, next);
                    }
                    if let Some(d) = due_in {
                        claim_at = claim_at.min(Instant::now() + d);
                    }
                }
                _ = notify.notified(), if can_refill => claim_at = Instant::now(),
                _ = tokio::time::sleep_until(wake_at.into()), if can_refill => {}
                _ = shutdown.wait() => {}
            }
        }

        // Shutdown: stop reading; let in-flight deliveries finish until the deadline, then
        // release the rest so another consumer picks them up at once.
        drop(waker);
        let deadline = tokio::time::sleep(self.inner.config.redis.shutdown_deadline);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                done = tasks.join_next_with_id() => {
                    finished(&ctx, done, &mut in_flight).await;
                }
                _ = &mut deadline => break,
            }
        }
        tasks.abort_all();
        while let Some(done) = tasks.join_next_with_id().await {
            if let Err(e) = &done {
                if e.is_cancelled() {
                    if let Some((entry, epoch)) = in_flight.remove(&e.id()) {
                        let _ = ctx
                            .settle(
                                &entry,
                                epoch,
                                Action::Release,
                                Duration::ZERO,
                                "",
                                &Metadata::new(),
                            )
                            .await;
                    }
                    continue;
                }
            }
            finished(&ctx, Some(done), &mut in_flight).await;
        }
        // What this loop released or promoted, and anything it was about to claim, is the
        // other consumers' now: wake them, as they may be sleeping until their own next due
        // time.
        if let Err(e) = ctx.wake_group().await {
            tracing::warn!(topic = %sub.topic, group = %sub.group, "waking the group's other consumers failed: {e}");
        }
        match incompatible {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Up to `count` messages of `topic`, oldest first, without consuming them (for operators'
    /// tools such as listing parked messages).
    pub async fn peek(&self, topic: &str, count: usize) -> Result<Vec<Stored>, TransportError> {
        let mut out = Vec::new();
        for stream in self.streams_of(topic)? {
            out.extend(self.peek_stream(&stream, count).await?);
        }
        // Buckets: oldest first across them, by entry id (milliseconds, then sequence).
        let order = |s: &Stored| {
            let (ms, seq) = s.entry.split_once('-').unwrap_or((&s.entry, "0"));
            (
                ms.parse::<u64>().unwrap_or(0),
                seq.parse::<u64>().unwrap_or(0),
            )
        };
        out.sort_by_key(order);
        out.truncate(count);
        Ok(out)
    }

    async fn peek_stream(&self, stream: &str, count: usize) -> Result<Vec<Stored>, TransportError> {
        let key = stream_key(&self.inner.config.redis.key_prefix, stream);
        let reply = self
            .command(
                "XRANGE",
                vec![
                    key.into(),
                    "-".into(),
                    "+".into(),
                    "COUNT".into(),
                    count_arg(count).into(),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for entry in reply.into_array() {
            let mut parts = entry.into_array().into_iter();
            let entry_id = parts.next().as_ref().and_then(as_text).unwrap_or_default();
            let mut stored = Stored {
                entry: entry_id,
                ..Stored::default()
            };
            let fields = parts.next().map(Value::into_array).unwrap_or_default();
            for kv in fields.chunks(2) {
                let key = as_text(&kv[0]).unwrap_or_default();
                let value = kv
                    .get(1)
                    .and_then(|v| v.as_bytes().map(<[u8]>::to_vec))
                    .unwrap_or_default();
                match key.as_str() {
                    "id" => stored.id = String::from_utf8_lossy(&value).into_owned(),
                    "pk" => stored.partition_key = String::from_utf8_lossy(&value).into_owned(),
                    "at" => {
                        stored.published_at_ms =
                            String::from_utf8_lossy(&value).parse().unwrap_or(0)
                    }
                    "payload" => stored.payload = value,
                    _ => {
                        if let Some(name) = key.strip_prefix("m:") {
                            stored.metadata.insert(
                                name.to_owned(),
                                String::from_utf8_lossy(&value).into_owned(),
                            );
                        }
                    }
                }
            }
            out.push(stored);
        }
        Ok(out)
    }

    async fn ensure_group(&self, stream_key: &str, group: &str) -> Result<(), TransportError> {
        let created = self
            .command(
                "XGROUP",
                vec![
                    "CREATE".into(),
                    stream_key.into(),
                    group.into(),
                    "0".into(),
                    "MKSTREAM".into(),
                ],
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Trim `stream` below what every group still needs; returns how many entries went.
    pub async fn trim(&self, stream: &str) -> Result<u64, TransportError> {
        let prefix = &self.inner.config.redis.key_prefix;
        let key = stream_key(prefix, stream);
        let groups = match self
            .command("XINFO", vec!["GROUPS".into(), key.clone().into()])
            .await
        {
            Ok(v) => v,
            Err(e) if e.to_string().contains("no such key") => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for g in groups.into_array() {
            let fields = g.into_array();
            for pair in fields.chunks(2) {
                if pair[0].as_str().as_deref() == Some("name") {
                    if let Some(name) = pair.get(1).and_then(Value::as_string) {
                        names.push(name);
                    }
                }
            }
        }
        let mut keys = vec![key];
        keys.extend(
            names
                .iter()
                .map(|g| GroupKeys::new(prefix, stream, g).held().to_owned()),
        );
        let removed: i64 = self
            .inner
            .scripts
            .trim
            .evalsha_with_reload(&self.inner.client, keys, names)
            .await
            .map_err(transport_error)?;
        Ok(removed.max(0) as u64)
    }
}

/// Whether the client reconnected since the last look (a lagging receiver missed some
/// reconnects, which counts).
fn reconnected(rx: &mut broadcast::Receiver<Server>) -> bool {
    let mut any = false;
    loop {
        match rx.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => any = true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return any,
        }
    }
}

/// Aborts a background task when dropped, so a consume loop that is itself dropped (a crash,
/// a cancelled future) leaves nothing running.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keep blocking on `XREAD` for entries newer than the newest seen on `streams` (a
/// subscription's stream and its group's wake-up stream), and notify when some arrive. Runs on
/// a connection of its own, with a finite block so it ends promptly. `listening` is set while
/// the reads work; when they fail, or this task ends, it is cleared and the loop notified, so
/// the loop claims at once and polls from then on. Nothing published while a read failed is
/// missed: the next read starts after the newest entry seen.
async fn wake_on_new_entries(
    connection: Connection,
    streams: [String; 2],
    notify: Arc<Notify>,
    listening: Arc<AtomicBool>,
) {
    /// Clears `listening` when the task ends, aborted or not.
    struct Deaf(Arc<AtomicBool>, Arc<Notify>);
    impl Drop for Deaf {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
            self.1.notify_one();
        }
    }
    let _deaf = Deaf(listening.clone(), notify.clone());
    let Ok(client) = connect_client(&connection).await else {
        return;
    };
    let cmd = |name: &'static str, blocking| {
        CustomCommand::new_static(name, ClusterHash::Offset(0), blocking)
    };
    let mut last = Vec::with_capacity(streams.len());
    for key in &streams {
        let newest = client
            .custom::<Value, Value>(
                cmd("XREVRANGE", false),
                vec![
                    key.as_str().into(),
                    "+".into(),
                    "-".into(),
                    "COUNT".into(),
                    "1".into(),
                ],
            )
            .await;
        last.push(match newest {
            Ok(v) => first_entry_id(v).unwrap_or_else(|| "0-0".to_owned()),
            Err(_) => "0-0".to_owned(),
        });
    }
    // An entry published after the loop's first claim and before the newest id was read
    // here would be missed: claim once more now.
    listening.store(true, Ordering::SeqCst);
    notify.notify_one();
    loop {
        let mut args: Vec<Value> = vec![
            "BLOCK".into(),
            "1000".into(),
            "COUNT".into(),
            "100".into(),
            "STREAMS".into(),
        ];
        args.extend(streams.iter().map(|k| Value::from(k.as_str())));
        args.extend(last.iter().map(|id| Value::from(id.as_str())));
        match client
            .custom::<Value, Value>(cmd("XREAD", true), args)
            .await
        {
            Ok(Value::Null) => listening.store(true, Ordering::SeqCst),
            Ok(v) => {
                listening.store(true, Ordering::SeqCst);
                for (key, id) in newest_in_xread(v) {
                    if let Some(i) = streams.iter().position(|s| *s == key) {
                        last[i] = id;
                    }
                }
                notify.notify_one();
            }
            Err(_) => {
                if listening.swap(false, Ordering::SeqCst) {
                    notify.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn first_entry_id(v: Value) -> Option<String> {
    v.into_array()
        .into_iter()
        .next()?
        .into_array()
        .into_iter()
        .next()?
        .as_string()
}

/// Each stream's key and the id of its last entry in an `XREAD` reply (RESP2 array or RESP3
/// map).
fn newest_in_xread(v: Value) -> Vec<(String, String)> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
        other => other
            .into_array()
            .into_iter()
            .filter_map(|s| {
                let mut parts = s.into_array().into_iter();
                Some((parts.next()?, parts.next()?))
            })
            .collect(),
    };
    streams
        .into_iter()
        .filter_map(|(key, entries)| {
            let id = entries
                .into_array()
                .into_iter()
                .last()?
                .into_array()
                .into_iter()
                .next()?
                .as_string()?;
            Some((key.as_string()?, id))
        })
        .collect()
}

/// A message on its way to its stream: where it goes and how its dedup is keyed.
#[derive(Debug, Clone)]
struct Addressed {
    topic: String,
    stream_key: String,
    dedup_key: String,
    message: OutgoingMessage,
}

impl RedisBackend {
    /// Where `message` goes on `topic`: its stream (checked to speak this protocol version)
    /// and its dedup key.
    async fn address(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> Result<Addressed, TransportError> {
        let stream = self.stream_for(topic, &message.partition_key)?;
        let prefix = &self.inner.config.redis.key_prefix;
        let stream_key = stream_key(prefix, &stream);
        self.check_stream_version(&stream_key).await?;
        Ok(Addressed {
            topic: topic.to_owned(),
            dedup_key: dedup_key(prefix, &stream, &message.partition_key, message.id.as_str()),
            stream_key,
            message,
        })
    }

    async fn publish_addressed(&self, m: Addressed) -> Result<PublishReceipt, TransportError> {
        let keys = vec![m.stream_key.clone(), m.dedup_key];
        let mut args: Vec<Value> = vec![
            millis(self.inner.config.redis.dedup_ttl).into(),
            m.message.id.as_str().into(),
            m.message.partition_key.as_str().into(),
            Value::Bytes(m.message.payload.into()),
        ];
        for (k, v) in &m.message.metadata {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        let reply: Value = self
            .inner
            .scripts
            .publish
            .evalsha_with_reload(&self.inner.client, keys, args)
            .await
            .map_err(transport_error)?;
        let receipt = match reply {
            Value::Integer(0) => PublishReceipt::Duplicate,
            Value::String(_) | Value::Bytes(_) => PublishReceipt::Published,
            _ => return Err(protocol_error("the publish script")),
        };
        // A duplicate too: the first write may be this publisher's own, whose reply was
        // lost before it was replicated.
        self.wait_replicated(&m.stream_key).await?;
        self.count_published(&m.topic, receipt);
        Ok(receipt)
    }

    fn count_published(&self, topic: &str, receipt: PublishReceipt) {
        let result = match receipt {
            PublishReceipt::Published => "published",
            PublishReceipt::Duplicate => "duplicate",
        };
        self.inner.metrics.count(
            "keyway_publish_total",
            &[("topic", topic), ("result", result)],
            1,
        );
    }
}

impl Publisher for RedisBackend {
    fn publish(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<PublishReceipt, TransportError>> + Send {
        let backend = self.clone();
        let topic = topic.to_owned();
        async move {
            let addressed = backend.address(&topic, message).await?;
            backend.publish_addressed(addressed).await
        }
    }
}

/// A delivery as the claim script hands it out.
#[derive(Debug, Clone)]
struct Claimed {
    entry: String,
    epoch: u64,
    attempt: u32,
    /// The entry's fields as stored: names and values are bytes, whatever a writer put there.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
struct ClaimReply {
    deliveries: Vec<Claimed>,
    next_due_ms: i64,
    now_ms: i64,
    /// The claim may have left claimable work (W2 in `scripts.rs`).
    more: bool,
    /// How long until the first pending entry of the group may expire: `-1` none pending,
    /// `-2` unknown (W3).
    expires_in_ms: i64,
}

impl ClaimReply {
    /// After a claim that scanned: how long until a claim must scan again, as far as this one
    /// can tell (W3): when the first pending entry may expire, a visibility timeout when none
    /// is pending, at once when the scan may have stopped at its count, [`POLL`] when unknown.
    fn scan_again(&self, visibility_timeout: Duration) -> Duration {
        match self.expires_in_ms {
            -1 => visibility_timeout,
            n if n >= 0 => Duration::from_millis(n as u64),
            _ if self.more => Duration::ZERO,
            _ => POLL,
        }
    }

    /// How long the loop may wait before it claims again, as far as this claim can tell, when
    /// the next scan is `until_scan` away: `None` when it should claim again as soon as it has
    /// room.
    fn wait(&self, until_scan: Duration) -> Option<Duration> {
        if self.more {
            return None;
        }
        let mut wait = until_scan;
        if self.next_due_ms >= 0 {
            let due = self.next_due_ms.saturating_sub(self.now_ms).max(0);
            wait = wait.min(Duration::from_millis(due as u64));
        }
        Some(wait)
    }
}

/// What the settle script did (W1 in `scripts.rs`).
#[derive(Debug, Clone)]
struct Settled {
    status: String,
    /// When the settle made an entry claimable, from now.
    due_in: Option<Duration>,
    /// For each message published with an ack, whether it was new (not a duplicate).
    published: Option<Vec<bool>>,
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The bytes of a string reply (a field name or value of a stream entry).
fn as_raw(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        other => as_text(other)?.parse().ok(),
    }
}

/// The version of the queue's wire protocol this backend writes (the publish script writes it
/// as field `v` of every entry) and reads. An entry without `v` is version 1.
pub const PROTOCOL_VERSION: &str = "1";

/// An error when `fields` (of `entry` in `stream`) carry a protocol version other than
/// [`PROTOCOL_VERSION`]: the entry was written by an incompatible client, and must be neither
/// delivered nor dead-lettered here.
fn check_version(
    stream: &str,
    entry: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), TransportError> {
    match fields.iter().find(|(name, _)| name == b"v") {
        Some((_, v)) if v != PROTOCOL_VERSION.as_bytes() => Err(TransportError::new(
            TransportErrorKind::Invalid,
            format!(
                "stream {stream}: entry {entry} was written by protocol version {}; this client speaks version {PROTOCOL_VERSION}",
                String::from_utf8_lossy(v)
            ),
        )),
        _ => Ok(()),
    }
}

/// One field of a stream entry: name and value, as bytes.
type Field = (Vec<u8>, Vec<u8>);

/// A stream entry's fields as stored, names and values as bytes: a name that is not UTF-8 is
/// the envelope check's to judge (failing the whole reply here would fail every claim that
/// meets the entry again).
fn entry_fields(fields: Value) -> Result<Vec<Field>, TransportError> {
    let raw = fields.into_array();
    let mut pairs = Vec::with_capacity(raw.len() / 2);
    for kv in raw.chunks(2) {
        let key = as_raw(&kv[0]).ok_or_else(|| protocol_error("a stream entry"))?;
        let value = kv.get(1).and_then(as_raw).unwrap_or_default();
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn parse_deliveries(v: Value) -> Result<Vec<Claimed>, TransportError> {
    let mut out = Vec::new();
    for d in v.into_array() {
        let mut parts = d.into_array().into_iter();
        let (Some(entry), Some(epoch), Some(attempt), Some(fields)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(protocol_error("the claim script"));
        };
        let pairs = entry_fields(fields)?;
        out.push(Claimed {
            entry: as_text(&entry).ok_or_else(|| protocol_error("the claim script"))?,
            epoch: as_number(&epoch).map_or(0, |n| u64::try_from(n).unwrap_or(0)),
            attempt: as_number(&attempt).map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            fields: pairs,
        });
    }
    Ok(out)
}

/// The fields of a stream entry that make a delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Envelope {
    id: String,
    partition_key: String,
    published_at_ms: u64,
    payload: Vec<u8>,
    metadata: Metadata,
}

/// Field `name` as text, or a problem.
fn text(name: &str, value: Vec<u8>, problems: &mut Vec<String>) -> Option<String> {
    String::from_utf8(value)
        .map_err(|_| problems.push(format!("`{name}` is not UTF-8")))
        .ok()
}

/// The envelope fields, in the order problems are reported.
const ENVELOPE_FIELDS: [&str; 4] = ["id", "pk", "at", "payload"];

/// Read the envelope of a stream entry, as the publish script writes it: `id` (not empty),
/// `pk`, `at` (ms since the epoch) and `payload`, each exactly once, and `m:<key>` metadata at
/// most once per key; text in UTF-8, the payload any bytes. Other fields are ignored, whatever
/// their names. An entry that breaks a rule was not written by [`Publisher::publish`]; every
/// problem is listed, so it can be dead-lettered instead of delivered with made-up values.
fn read_envelope(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Envelope, Vec<String>> {
    let mut found: [(usize, Option<Vec<u8>>); 4] = Default::default();
    let mut metadata: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (name, value) in fields {
        if let Some(slot) = ENVELOPE_FIELDS.iter().position(|f| f.as_bytes() == name) {
            let (count, first) = &mut found[slot];
            *count += 1;
            first.get_or_insert(value);
        } else if let Some(key) = name.strip_prefix(b"m:") {
            metadata.push((key.to_vec(), value));
        }
    }

    let mut problems = Vec::new();
    let mut envelope = Envelope::default();
    for (name, (count, first)) in ENVELOPE_FIELDS.iter().zip(found) {
        match count {
            0 => {
                problems.push(format!("no `{name}` field"));
                continue;
            }
            1 => {}
            n => problems.push(format!("`{name}` appears {n} times")),
        }
        let value = first.unwrap_or_default();
        match *name {
            "id" => match text(name, value, &mut problems) {
                Some(id) if id.is_empty() => problems.push("`id` is empty".to_owned()),
                Some(id) => envelope.id = id,
                None => {}
            },
            "pk" => {
                if let Some(pk) = text(name, value, &mut problems) {
                    envelope.partition_key = pk;
                }
            }
            "at" => match std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
            {
                Some(at) => envelope.published_at_ms = at,
                None => problems.push("`at` is not a number of milliseconds".to_owned()),
            },
            _ => envelope.payload = value,
        }
    }
    let mut repeated = Vec::new();
    for (key, value) in metadata {
        let Ok(key) = String::from_utf8(key) else {
            problems.push("a metadata field name (`m:...`) is not UTF-8".to_owned());
            continue;
        };
        let Ok(value) = String::from_utf8(value) else {
            problems.push(format!("metadata `m:{key}` is not UTF-8"));
            continue;
        };
        if envelope.metadata.contains_key(&key) {
            if !repeated.contains(&key) {
                problems.push(format!("metadata `m:{key}` appears more than once"));
                repeated.push(key);
            }
            continue;
        }
        envelope.metadata.insert(key, value);
    }
    if problems.is_empty() {
        Ok(envelope)
    } else {
        Err(problems)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Ack,
    Nack,
    Postpone,
    Reject,
    Malformed,
    Release,
    Extend,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Ack => "ack",
            Action::Nack => "nack",
            Action::Postpone => "postpone",
            Action::Reject => "reject",
            Action::Malformed => "malformed",
            Action::Release => "release",
            Action::Extend => "extend",
        }
    }
}

/// What one consume loop shares with its delivery tasks.
struct LoopContext {
    backend: RedisBackend,
    keys: Arc<GroupKeys>,
    sub: Arc<SubscriptionConfig>,
    consumer: Arc<str>,
}

impl LoopContext {
    fn head_args(&self) -> Vec<Value> {
        vec![
            self.sub.group.as_str().into(),
            (*self.consumer).into(),
            self.sub.topic.as_str().into(),
            if self.sub.dead_letter { "1" } else { "0" }.into(),
            i64::from(self.sub.max_attempts).into(),
        ]
    }

    /// Claim up to `count` deliveries; `scan` for entries past the visibility timeout too.
    async fn claim(&self, count: usize, scan: bool) -> Result<ClaimReply, TransportError> {
        let mut args = self.head_args();
        args.push(count_arg(count).into());
        args.push(millis(self.sub.visibility_timeout).into());
        if !scan {
            args.push("0".into());
        }
        let reply: Value = self
            .backend
            .inner
            .scripts
            .claim
            .evalsha_with_reload(&self.backend.inner.client, self.keys.keys.clone(), args)
            .await
            .map_err(transport_error)?;
        let mut parts = reply.into_array().into_iter();
        let deliveries = parse_deliveries(
            parts
                .next()
                .ok_or_else(|| protocol_error("the claim script"))?,
        )?;
        let mut number = || parts.next().as_ref().and_then(as_number);
        let (Some(next_due_ms), Some(now_ms), Some(more), Some(expires_in_ms)) =
            (number(), number(), number(), number())
        else {
            return Err(protocol_error("the claim script"));
        };
        Ok(ClaimReply {
            deliveries,
            next_due_ms,
            now_ms,
            more: more == 1,
            expires_in_ms,
        })
    }

    /// Remove the group's idle consumers that have nothing pending (see [`TEND`]) and report
    /// its health in the metrics: `keyway_group_consumers`, `keyway_group_pending`,
    /// `keyway_group_lag` (entries not yet read by the group; absent when Redis cannot tell),
    /// `keyway_group_held` (entries waiting behind their key or for a retry) and
    /// `keyway_consumers_removed_total`.
    async fn tend(&self) -> Result<(), TransportError> {
        let inner = &self.backend.inner;
        let keys = vec![self.keys.stream().to_owned(), self.keys.held().to_owned()];
        let args: Vec<Value> = vec![
            self.sub.group.as_str().into(),
            (*self.consumer).into(),
            millis(inner.config.redis.consumer_idle_removal).into(),
        ];
        let reply: Value = inner
            .scripts
            .tend
            .evalsha_with_reload(&inner.client, keys, args)
            .await
            .map_err(transport_error)?;
        let mut parts = reply.into_array().into_iter();
        let removed: Vec<String> = parts
            .next()
            .map(Value::into_array)
            .unwrap_or_default()
            .iter()
            .filter_map(as_text)
            .collect();
        let numbers: Vec<Option<i64>> = parts.map(|v| as_number(&v)).collect();
        let [Some(consumers), Some(pending), Some(lag), Some(held)] = numbers[..] else {
            return Err(protocol_error("the group script"));
        };
        let mut labels = vec![
            ("topic", self.sub.topic.as_str()),
            ("group", self.sub.group.as_str()),
        ];
        if let Some(bucket) = &self.keys.bucket {
            labels.push(("bucket", bucket));
        }
        let metrics = &inner.metrics;
        metrics.set_gauge("keyway_group_consumers", &labels, consumers);
        metrics.set_gauge("keyway_group_pending", &labels, pending);
        metrics.set_gauge("keyway_group_held", &labels, held);
        if lag >= 0 {
            metrics.set_gauge("keyway_group_lag", &labels, lag);
        } else {
            metrics.remove_gauge("keyway_group_lag", &labels);
        }
        if !removed.is_empty() {
            metrics.count(
                "keyway_consumers_removed_total",
                &labels,
                removed.len() as u64,
            );
            tracing::info!(
                topic = %self.sub.topic,
                group = %self.sub.group,
                "removed {} consumer(s) idle for {} or more with nothing pending: {}",
                removed.len(),
                super::config::format_duration(inner.config.redis.consumer_idle_removal),
                removed.join(", ")
            );
        }
        Ok(())
    }

    /// Tell the group's other consume loops to claim now: an entry on the group's wake-up
    /// stream (see [`GroupKeys`]), which their blocking reads see.
    async fn wake_group(&self) -> Result<(), TransportError> {
        self.backend
            .command(
                "XADD",
                vec![
                    self.keys.wake.as_str().into(),
                    "MAXLEN".into(),
                    "1".into(),
                    "*".into(),
                    "by".into(),
                    (*self.consumer).into(),
                ],
            )
            .await
            .map(drop)
    }

    async fn recover(
        &self,
        count: usize,
        in_flight: &[String],
    ) -> Result<Vec<Claimed>, TransportError> {
        let mut args = self.head_args();
        args.push(count_arg(count).into());
        args.extend(in_flight.iter().map(|id| Value::from(id.as_str())));
        let reply: Value = self
            .backend
            .inner
            .scripts
            .recover
            .evalsha_with_reload(&self.backend.inner.client, self.keys.keys.clone(), args)
            .await
            .map_err(transport_error)?;
        parse_deliveries(reply)
    }

    /// Run the settle script, retrying transport failures a few times. A delivery that cannot
    /// be settled stays pending and is redelivered after the visibility timeout.
    async fn settle(
        &self,
        entry: &str,
        epoch: u64,
        action: Action,
        delay: Duration,
        reason: &str,
        detail: &Metadata,
    ) -> Result<Settled, TransportError> {
        self.settle_with(entry, epoch, action, delay, reason, detail, &[])
            .await
    }

    /// [`settle`](Self::settle), publishing `with_ack` (messages on streams of this group's
    /// slot, see [`Self::may_publish_with_ack`]) in the same script when `action` is an ack.
    #[allow(clippy::too_many_arguments)]
    async fn settle_with(
        &self,
        entry: &str,
        epoch: u64,
        action: Action,
        delay: Duration,
        reason: &str,
        detail: &Metadata,
        with_ack: &[Addressed],
    ) -> Result<Settled, TransportError> {
        let mut keys = self.keys.keys.clone();
        let mut args = self.head_args();
        args.push(entry.into());
        args.push(i64::try_from(epoch).unwrap_or(i64::MAX).into());
        args.push(action.as_str().into());
        args.push(millis(delay).into());
        args.push(reason.into());
        for (k, v) in detail {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        if action == Action::Ack && !with_ack.is_empty() {
            args.push(millis(self.backend.inner.config.redis.dedup_ttl).into());
            for m in with_ack {
                keys.push(m.stream_key.clone());
                keys.push(m.dedup_key.clone());
                args.push(m.message.id.as_str().into());
                args.push(m.message.partition_key.as_str().into());
                args.push(Value::Bytes(m.message.payload.clone().into()));
                args.push(count_arg(m.message.metadata.len()).into());
                for (k, v) in &m.message.metadata {
                    args.push(k.as_str().into());
                    args.push(v.as_str().into());
                }
            }
        }
        let mut wait = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            let result: Result<Value, FredError> = self
                .backend
                .inner
                .scripts
                .settle
                .evalsha_with_reload(&self.backend.inner.client, keys.clone(), args.clone())
                .await;
            match result {
                Ok(v) => {
                    let mut parts = v.into_array().into_iter();
                    let status = parts.next().as_ref().and_then(as_text);
                    let due_in = parts.next().as_ref().and_then(as_number);
                    let (Some(status), Some(due_in)) = (status, due_in) else {
                        return Err(protocol_error("the settle script"));
                    };
                    let due_in = u64::try_from(due_in).ok().map(Duration::from_millis);
                    let published = parts.next().map(|fresh| {
                        fresh
                            .into_array()
                            .iter()
                            .map(|v| as_number(v) == Some(1))
                            .collect()
                    });
                    return Ok(Settled {
                        status,
                        due_in,
                        published,
                    });
                }
                Err(e) => {
                    let e = transport_error(e);
                    tries += 1;
                    if !e.is_retryable() || tries >= 4 {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }

    /// Run the handler on one delivery and settle it; returns when the settle made an entry
    /// claimable (W1), so the loop knows when to claim again.
    async fn process<H: Handler>(
        self: Arc<Self>,
        claimed: Claimed,
        handler: Arc<H>,
    ) -> Option<Duration> {
        let envelope = match read_envelope(claimed.fields) {
            Ok(envelope) => envelope,
            Err(problems) => {
                return self
                    .dead_letter_malformed(&claimed.entry, claimed.epoch, &problems)
                    .await
            }
        };
        let lease = Arc::new(RedisLease {
            ctx: self.clone(),
            entry: claimed.entry.clone(),
            epoch: claimed.epoch,
            staged: Mutex::new(Vec::new()),
        });
        let delivery = Delivery {
            topic: self.sub.topic.clone(),
            id: envelope.id,
            partition_key: envelope.partition_key,
            payload: envelope.payload,
            metadata: envelope.metadata,
            published_at_ms: envelope.published_at_ms,
            attempt: claimed.attempt,
            lease: lease.clone(),
        };
        let span = tracing::info_span!(
            "delivery",
            topic = %self.sub.topic,
            group = %self.sub.group,
            id = %delivery.id,
            partition_key = %delivery.partition_key,
            attempt = delivery.attempt,
        );
        let started = Instant::now();
        let mut outcome = handler.handle(&delivery).instrument(span.clone()).await;
        let elapsed = started.elapsed();
        let staged = std::mem::take(&mut *lease.staged.lock().unwrap_or_else(|e| e.into_inner()));
        let mut with_ack = Vec::new();
        if outcome == Outcome::Ack && !staged.is_empty() {
            if self.may_publish_with_ack(&staged) {
                with_ack = staged;
            } else if let Err(failed) = self
                .publish_before_ack(staged)
                .instrument(span.clone())
                .await
            {
                outcome = failed;
            }
        }

        let empty = Metadata::new();
        let (action, delay, failure) = match &outcome {
            Outcome::Ack => (Action::Ack, Duration::ZERO, None),
            Outcome::Postpone(d) => (Action::Postpone, *d, None),
            Outcome::Nack(f) => (
                Action::Nack,
                self.sub.backoff.delay(delivery.attempt),
                Some(f),
            ),
            Outcome::Reject(f) if self.sub.retry_every_error => (
                Action::Nack,
                self.sub.backoff.delay(delivery.attempt),
                Some(f),
            ),
            Outcome::Reject(f) => (Action::Reject, Duration::ZERO, Some(f)),
        };
        let (reason, detail) =
            failure.map_or(("", &empty), |f: &Failure| (f.reason.as_str(), &f.detail));
        let labels = [
            ("topic", self.sub.topic.as_str()),
            ("group", self.sub.group.as_str()),
            ("outcome", action.as_str()),
        ];
        let metrics = &self.backend.inner.metrics;
        metrics.observe("keyway_handler_seconds", &labels, elapsed);
        metrics.count("keyway_deliveries_total", &labels, 1);
        let result = self
            .settle_with(
                &claimed.entry,
                claimed.epoch,
                action,
                delay,
                reason,
                detail,
                &with_ack,
            )
            .await;
        if let Ok(Settled {
            published: Some(fresh),
            ..
        }) = &result
        {
            for (m, new) in with_ack.iter().zip(fresh) {
                let receipt = if *new {
                    PublishReceipt::Published
                } else {
                    PublishReceipt::Duplicate
                };
                self.backend.count_published(&m.topic, receipt);
            }
        }
        span.in_scope(|| self.settled(result, reason))
    }

    /// Whether messages staged with an ack can go out in the settle script: always on one
    /// server; on a cluster when every key they touch is in the group's slot (a script's keys
    /// must share one). Their effects and the ack then replicate together, so they need no
    /// `WAIT` of their own: a failover that loses them loses the ack too, and the redelivery
    /// stages them again.
    fn may_publish_with_ack(&self, staged: &[Addressed]) -> bool {
        if !self.backend.inner.client.is_clustered() {
            return true;
        }
        let slot = fred::util::redis_keyslot(self.keys.stream().as_bytes());
        staged.iter().all(|m| {
            fred::util::redis_keyslot(m.stream_key.as_bytes()) == slot
                && fred::util::redis_keyslot(m.dedup_key.as_bytes()) == slot
        })
    }

    /// Publish messages staged with an ack one by one, in order, before the ack (they are in
    /// other slots than the group's). A failure turns the ack into a nack when retrying may
    /// help, a reject otherwise; what was published stays (the redelivery's copies are
    /// duplicates).
    async fn publish_before_ack(&self, staged: Vec<Addressed>) -> Result<(), Outcome> {
        for m in staged {
            let topic = m.topic.clone();
            if let Err(e) = self.backend.publish_addressed(m).await {
                let failure =
                    Failure::new(format!("publishing on {topic:?} with the ack failed: {e}"))
                        .with_detail("kind", "publish");
                return Err(if e.is_retryable() {
                    Outcome::Nack(failure)
                } else {
                    Outcome::Reject(failure)
                });
            }
        }
        Ok(())
    }

    /// A stream entry without a usable envelope (see [`read_envelope`]) never reaches the
    /// handler and is never retried (it cannot change): it is dead-lettered as malformed, with
    /// its fields kept as they were, and the subscription goes on.
    async fn dead_letter_malformed(
        &self,
        entry: &str,
        epoch: u64,
        problems: &[String],
    ) -> Option<Duration> {
        let reason = format!("malformed stream entry: {}", problems.join("; "));
        let span = tracing::warn_span!(
            "delivery",
            topic = %self.sub.topic,
            group = %self.sub.group,
            entry = %entry,
        );
        span.in_scope(|| tracing::warn!("{reason}"));
        self.backend.inner.metrics.count(
            "keyway_deliveries_total",
            &[
                ("topic", self.sub.topic.as_str()),
                ("group", self.sub.group.as_str()),
                ("outcome", Action::Malformed.as_str()),
            ],
            1,
        );
        let detail = Metadata::from([("kind".to_owned(), "malformed".to_owned())]);
        let result = self
            .settle(
                entry,
                epoch,
                Action::Malformed,
                Duration::ZERO,
                &reason,
                &detail,
            )
            .await;
        span.in_scope(|| self.settled(result, &reason))
    }

    /// Count and log what the settle script did; returns when it made an entry claimable.
    fn settled(&self, result: Result<Settled, TransportError>, reason: &str) -> Option<Duration> {
        match result.as_ref().map(|s| s.status.as_str()) {
            Ok("dead") => self.backend.inner.metrics.count(
                "keyway_dead_letters_total",
                &[("topic", self.sub.topic.as_str()), ("group", self.sub.group.as_str())],
                1,
            ),
            Ok("dropped") => tracing::warn!(
                reason,
                "delivery failed and the subscription has no dead-letter stream: dropped"
            ),
            Ok("stale") => tracing::warn!(
                "settling refused: the delivery was reclaimed by another consumer (visibility timeout)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "settling failed, the delivery will be redelivered after the visibility timeout: {e}"
            ),
        }
        result.ok().and_then(|s| s.due_in)
    }
}

fn spawn_delivery<H: Handler + 'static>(
    tasks: &mut JoinSet<Option<Duration>>,
    in_flight: &mut HashMap<tokio::task::Id, (String, u64)>,
    ctx: &Arc<LoopContext>,
    handler: &Arc<H>,
    claimed: Claimed,
) {
    let entry = (claimed.entry.clone(), claimed.epoch);
    let handle = tasks.spawn(ctx.clone().process(claimed, handler.clone()));
    in_flight.insert(handle.id(), entry);
}

/// The result of a delivery task, as `JoinSet` hands it back.
type Done = Option<Result<(tokio::task::Id, Option<Duration>), tokio::task::JoinError>>;

/// A finished delivery task: forget it; a handler that panicked nacks its delivery. Returns
/// when its settle made an entry claimable (W1).
async fn finished(
    ctx: &LoopContext,
    done: Done,
    in_flight: &mut HashMap<tokio::task::Id, (String, u64)>,
) -> Option<Duration> {
    match done {
        Some(Ok((id, due_in))) => {
            in_flight.remove(&id);
            due_in
        }
        Some(Err(e)) => {
            let (entry, epoch) = in_flight.remove(&e.id())?;
            if !e.is_panic() {
                return None;
            }
            let reason = "the handler panicked";
            tracing::error!(topic = %ctx.sub.topic, entry = %entry, "{reason}");
            ctx.settle(
                &entry,
                epoch,
                Action::Nack,
                ctx.sub.backoff.delay(1),
                reason,
                &Metadata::new(),
            )
            .await
            .ok()?
            .due_in
        }
        None => None,
    }
}

struct RedisLease {
    ctx: Arc<LoopContext>,
    entry: String,
    epoch: u64,
    /// Messages to publish with the ack, in order.
    staged: Mutex<Vec<Addressed>>,
}

impl Lease for RedisLease {
    /// Resets the entry's idle clock in the PEL: the delivery is safe for one more visibility
    /// timeout from now, whatever `by` asks (the PEL has no per-entry deadline to set).
    fn extend(&self, _by: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            match self
                .ctx
                .settle(
                    &self.entry,
                    self.epoch,
                    Action::Extend,
                    Duration::ZERO,
                    "",
                    &Metadata::new(),
                )
                .await?
                .status
                .as_str()
            {
                "ok" => Ok(()),
                _ => Err(TransportError::new(
                    TransportErrorKind::Invalid,
                    "the delivery was already reclaimed by another consumer",
                )),
            }
        })
    }

    fn publish_on_ack(
        &self,
        topic: &str,
        message: OutgoingMessage,
    ) -> BoxFuture<'_, Result<(), TransportError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let addressed = self.ctx.backend.address(&topic, message).await?;
            self.staged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(addressed);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    fn problems(fields: &[(&[u8], &[u8])]) -> Vec<String> {
        read_envelope(entry(fields)).expect_err("malformed")
    }

    const GOOD: [(&[u8], &[u8]); 5] = [
        (b"id", b"o-1"),
        (b"pk", b"k"),
        (b"at", b"1700000000000"),
        (b"payload", b"\xff{}"),
        (b"m:trace", b"t-1"),
    ];

    #[test]
    fn an_entry_as_published_reads_whole() {
        let mut fields = GOOD.to_vec();
        // Fields the envelope does not know are ignored, whatever their names.
        fields.push((b"later", b"x"));
        fields.push((b"\xfe\xff", b"x"));
        assert_eq!(
            read_envelope(entry(&fields)).unwrap(),
            Envelope {
                id: "o-1".into(),
                partition_key: "k".into(),
                published_at_ms: 1_700_000_000_000,
                payload: b"\xff{}".to_vec(),
                metadata: Metadata::from([("trace".into(), "t-1".into())]),
            }
        );
        // An empty partition key is a partition key.
        let mut fields = GOOD.to_vec();
        fields[1] = (b"pk", b"");
        assert_eq!(read_envelope(entry(&fields)).unwrap().partition_key, "");
    }

    #[test]
    fn every_problem_of_an_envelope_is_named() {
        assert_eq!(problems(&GOOD[1..]), ["no `id` field"]);
        assert_eq!(
            problems(&[(b"payload", b"")]),
            ["no `id` field", "no `pk` field", "no `at` field"]
        );
        let mut twice = GOOD.to_vec();
        twice.push((b"id", b"o-2"));
        twice.push((b"m:trace", b"t-2"));
        twice.push((b"m:trace", b"t-3"));
        assert_eq!(
            problems(&twice),
            [
                "`id` appears 2 times",
                "metadata `m:trace` appears more than once"
            ]
        );
        let mut bad = GOOD.to_vec();
        bad[0] = (b"id", b"");
        bad[1] = (b"pk", b"\xff");
        bad[2] = (b"at", b"soon");
        bad[4] = (b"m:trace", b"\xc3");
        bad.push((b"m:\xff", b"x"));
        bad.push((b"m:ok", b"fine"));
        assert_eq!(
            problems(&bad),
            [
                "`id` is empty",
                "`pk` is not UTF-8",
                "`at` is not a number of milliseconds",
                "metadata `m:trace` is not UTF-8",
                "a metadata field name (`m:...`) is not UTF-8",
            ]
        );
        let mut negative = GOOD.to_vec();
        negative[2] = (b"at", b"-5");
        assert_eq!(
            problems(&negative),
            ["`at` is not a number of milliseconds"]
        );
    }
}
