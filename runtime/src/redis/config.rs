//! Configuration of the Redis backend: the topic registry and the subscriptions, from a TOML
//! file with environment overrides. Every problem names the key it is about.
//!
//! ```toml
//! [redis]
//! url = "rediss://redis.internal:6380"  # rediss:// is TLS; redis:// is plaintext
//! username = "keyway"                   # ACL user (default: the URL's, else `default`)
//! password_file = "/run/secrets/redis"  # the password, kept out of the URL and this file
//! tls_ca_file = "/etc/keyway/redis-ca.pem"  # trust this CA instead of the system roots
//! tls_cert_file = "/etc/keyway/client.pem"  # client certificate, for `tls-auth-clients yes`
//! tls_key_file = "/etc/keyway/client.key"   # its private key (PKCS#8, PKCS#1 or SEC1 PEM)
//! tls_server_name = "redis.internal"    # the name the certificate must carry (default: host)
//! dedup_ttl = "24h"                     # how long publish remembers (topic, partition key, id)
//! eviction_policy = "warn"              # or "refuse" to start unless maxmemory-policy is noeviction
//! consumer_idle_removal = "1h"          # remove consumers idle this long with nothing pending
//! wait_replicas = 1                     # a publish or store write waits for this many replicas
//! wait_timeout = "1s"                   # ... this long at most; fewer is a retryable error
//!
//! [topics]                        # topic key = stream name
//! runway-merge = "runway-merge"
//! merge-signal = "merge-signal"
//!
//! [subscriptions.mergesignal]
//! topic = "merge-signal"
//! group = "orchestrator"
//! batch_size = 10                 # deliveries in flight per process
//! visibility_timeout = "60s"
//! max_attempts = 3
//! backoff = { initial = "1s", multiplier = 2.0, max = "30s" }
//! dead_letter = true              # to stream "<stream>_dlq"
//!
//! [subscriptions.mergesignal-dlq]
//! topic = "merge-signal_dlq"
//! group = "reconciler"
//! preset = "dead-letter-consumer" # no DLQ of its own, 1000 attempts, every error retried
//! ```
//!
//! - Durations are `250ms`, `60s`, `5m`, `24h`, `7d` or a whole number of seconds; every
//!   duration and count has a range (see [`RANGES`]), checked when the file is loaded and again
//!   when the backend connects (a configuration built in code gets the same checks), so no
//!   value can overflow the arithmetic done with it.
//! - Environment: `KEYWAY__<SECTION>__<KEY>...=value` overrides a value (segments match keys
//!   case-insensitively, `_` matching `-`), e.g. `KEYWAY__REDIS__URL=redis://10.0.0.5:6379`
//!   or `KEYWAY__SUBSCRIPTIONS__MERGESIGNAL__BATCH_SIZE=50`.
//! - The password, lowest precedence first: the URL's (`redis://:pw@host`), the file named by
//!   `redis.password_file`, the file named by `REDIS_PASSWORD_FILE`, the value of
//!   `REDIS_PASSWORD`. The environment wins over the file, as every override does; setting
//!   both `REDIS_PASSWORD` and `REDIS_PASSWORD_FILE` is an error. A password file holds the
//!   password alone; one trailing newline is dropped. There is no `redis.password` key: a
//!   password does not belong in a configuration file.
//! - Secrets are never shown: `Debug` and `Display` of [`RedisConfig`], every error and every
//!   log line show URLs through [`redact_url`] and a password as `***`.
//! - TLS: a `rediss` scheme verifies the server's certificate against the system roots, or
//!   against `tls_ca_file` alone when it is given, for the URL's host or `tls_server_name`. The
//!   `tls_*` keys with a plaintext `redis://` URL are an error rather than a silent plaintext
//!   connection.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::topic::is_valid_topic_name;
pub use crate::transport::{Backoff, SubscriptionConfig};

/// Suffix of dead-letter streams: dead letters of stream `s` go to `s_dlq`.
pub const DEAD_LETTER_SUFFIX: &str = "_dlq";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Connection and server-wide settings.
    pub redis: RedisConfig,
    /// Topic key → stream name.
    pub registry: Registry,
    /// Subscriptions by name.
    pub subscriptions: BTreeMap<String, SubscriptionConfig>,
}

/// What to do when the server may evict keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionCheck {
    /// Log a warning and go on.
    Warn,
    /// Refuse to start.
    Refuse,
}

/// A password, never shown: `Debug` and `Display` print `***`. It remembers where it came
/// from, so an authentication error can say which source to fix.
#[derive(Clone, PartialEq, Eq)]
pub struct Password {
    value: String,
    origin: String,
}

impl Password {
    /// A password given in code.
    pub fn new(value: impl Into<String>) -> Self {
        Password::with_origin(value, "the configuration")
    }

    fn with_origin(value: impl Into<String>, origin: impl Into<String>) -> Self {
        Password {
            value: value.into(),
            origin: origin.into(),
        }
    }

    /// The password itself, for the connection only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it came from, e.g. `REDIS_PASSWORD` or `redis.password_file (/run/secrets/redis)`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Password(***, from {})", self.origin)
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Connection and server-wide settings. `Debug` and `Display` show the URL without its
/// password and never show a password.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, `rediss://` for TLS (also the `-cluster` and `-sentinel`
    /// forms).
    pub url: String,
    /// The ACL user, instead of the URL's. Default none: the URL's, else `default`.
    pub username: Option<String>,
    /// The password, instead of the URL's and `password_file` (`REDIS_PASSWORD`). Default none.
    pub password: Option<Password>,
    /// A file holding the password, instead of the URL's (`redis.password_file`,
    /// `REDIS_PASSWORD_FILE`); read when connecting. Default none.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates to trust instead of the system roots (TLS only).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for servers that verify clients (TLS only;
    /// needs `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (TLS only; needs `tls_cert_file`).
    pub tls_key_file: Option<PathBuf>,
    /// The name the server's certificate must be valid for (and the SNI sent), instead of the
    /// URL's host: for a server reached by an address its certificate does not name.
    pub tls_server_name: Option<String>,
    /// Prefix of every key Keyway writes. Default `kw`.
    pub key_prefix: String,
    /// How long publish remembers a (topic, partition key, id). Default 24 h; it outlives
    /// consumption, so a late duplicate of a consumed message is still dropped.
    pub dedup_ttl: Duration,
    /// Whether a `maxmemory-policy` other than `noeviction` stops the start. Default warn.
    pub eviction_policy: EvictionCheck,
    /// How long shutdown waits for in-flight deliveries before releasing them. Default 30 s.
    pub shutdown_deadline: Duration,
    /// How often a subscription trims its stream and looks after its group (removes idle
    /// consumers, reports the group's health). Default 10 s.
    pub trim_interval: Duration,
    /// A consumer of a group with nothing pending and idle this long is removed from the group
    /// (a process that stopped or crashed leaves its consumer behind; its pending entries are
    /// first reclaimed by others after the visibility timeout). Default 1 h.
    pub consumer_idle_removal: Duration,
    /// How many replicas must have a publish (and a stage's store write) before it counts as
    /// done: `WAIT <n>` on the master that took it, so an acknowledged message survives the
    /// failover of that master to one of those replicas. Default 0 (do not wait; replication
    /// is asynchronous and a failover may lose the newest writes).
    pub wait_replicas: u32,
    /// How long a write waits for `wait_replicas`; fewer replicas by then is a retryable error
    /// (the write itself stays, and a retried publish is deduplicated). Default 1 s.
    pub wait_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            username: None,
            password: None,
            password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
            key_prefix: "kw".into(),
            dedup_ttl: Duration::from_secs(24 * 3600),
            eviction_policy: EvictionCheck::Warn,
            shutdown_deadline: Duration::from_secs(30),
            trim_interval: Duration::from_secs(10),
            consumer_idle_removal: Duration::from_secs(3600),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("key_prefix", &self.key_prefix)
            .field("dedup_ttl", &self.dedup_ttl)
            .field("eviction_policy", &self.eviction_policy)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("trim_interval", &self.trim_interval)
            .field("consumer_idle_removal", &self.consumer_idle_removal)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// One line for a log: `rediss://app:***@host:6380 (user app, password from REDIS_PASSWORD,
/// TLS with CA file /etc/ca.pem)`.
impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.url))?;
        let mut notes = Vec::new();
        if let Some(user) = &self.username {
            notes.push(format!("user {user}"));
        }
        if let Some(password) = &self.password {
            notes.push(format!("password from {}", password.origin()));
        } else if let Some(path) = &self.password_file {
            notes.push(format!("password from file {}", path.display()));
        }
        if uses_tls(&self.url) {
            let mut tls = match &self.tls_ca_file {
                Some(ca) => format!("TLS with CA file {}", ca.display()),
                None => "TLS with the system roots".to_owned(),
            };
            if let Some(cert) = &self.tls_cert_file {
                tls.push_str(&format!(", client certificate {}", cert.display()));
            }
            if let Some(name) = &self.tls_server_name {
                tls.push_str(&format!(", server name {name}"));
            }
            notes.push(tls);
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join(", "))?;
        }
        Ok(())
    }
}

/// Whether `url` has a TLS scheme (`rediss`, `rediss-cluster`, `rediss-sentinel`).
pub fn uses_tls(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().starts_with("rediss"))
}

/// The URL schemes a Redis connection accepts: plain, TLS, cluster and sentinel forms.
pub const URL_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
];

/// `url` with any password replaced by `***`, fit to print: `redis://app:***@host:6379`.
/// Text that is not a URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first `/`, `?` or `#`; credentials end at its last `@`. A
    // password with an unencoded `/`, `?` or `#` in it ends the authority early: then the
    // credentials are everything before the first `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, host, tail) = match rest[..end].rfind('@') {
        Some(at) => (&rest[..at], &rest[at..end], &rest[end..]),
        None => match rest.find('@') {
            Some(at) => {
                let after = &rest[at..];
                let host_end = after[1..]
                    .find(['/', '?', '#'])
                    .map_or(after.len(), |i| i + 1);
                (&rest[..at], &after[..host_end], &after[host_end..])
            }
            None => return url.to_owned(),
        },
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None if userinfo.is_empty() => String::new(),
        // `redis://secret@host`: a lone user-info part is taken as the password.
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}{host}{tail}")
}

/// Check that `url` names a Redis scheme, with an error that says which schemes are accepted.
pub fn check_url_scheme(url: &str) -> Result<(), ConfigError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if URL_SCHEMES.contains(&s.to_ascii_lowercase().as_str()) => Ok(()),
        Some(s) => Err(ConfigError::new(
            "redis.url",
            format!(
                "{}: `{s}://` is not a Redis URL scheme (expected one of {})",
                redact_url(url),
                URL_SCHEMES
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        None => Err(ConfigError::new(
            "redis.url",
            format!(
                "{:?} is not a URL (for example redis://127.0.0.1:6379)",
                redact_url(url)
            ),
        )),
    }
}

/// Topic key → stream name. Dead-letter keys (`<key>_dlq`) resolve to `<stream>_dlq` without
/// being listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    streams: BTreeMap<String, String>,
    /// Topic keys spread over more than one stream (see [`Registry::set_buckets`]).
    buckets: BTreeMap<String, u16>,
}

/// `topics.<key>.buckets`: 1 to this.
pub const BUCKETS_MAX: u16 = 1024;

/// The bucket of `partition_key` in a topic of `buckets` streams: FNV-1a (64-bit) of its
/// UTF-8 bytes, modulo the bucket count. Every client computes it the same way, so a key's
/// messages all go to one stream, whoever publishes them.
pub fn bucket_of(partition_key: &str, buckets: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in partition_key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(buckets.max(1))) as u16
}

/// The stream of bucket `bucket` of a topic whose stream is `stream` and which has `buckets`
/// buckets: `stream` itself for one bucket, else `<stream>#<bucket>` (`#` is not allowed in
/// a stream name, so no configured stream can be one of these).
pub fn bucket_stream(stream: &str, buckets: u16, bucket: u16) -> String {
    if buckets <= 1 {
        stream.to_owned()
    } else {
        format!("{stream}#{bucket}")
    }
}

impl Registry {
    /// A registry from (key, stream) pairs; keys and streams must be valid topic names, and no
    /// two keys may share a stream.
    pub fn new<I, K, S>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, S)>,
        K: Into<String>,
        S: Into<String>,
    {
        let mut registry = Registry::default();
        for (key, stream) in pairs {
            registry.insert(key.into(), stream.into())?;
        }
        Ok(registry)
    }

    /// A registry where every key is its own stream name.
    pub fn identity<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigError> {
        Registry::new(keys.into_iter().map(|k| (k, k)))
    }

    fn insert(&mut self, key: String, stream: String) -> Result<(), ConfigError> {
        let at = format!("topics.{key}");
        if !is_valid_topic_name(&key) {
            return Err(ConfigError::new(
                &at,
                "the topic key is not a valid topic name ([a-z0-9_-]{1,255})",
            ));
        }
        if !is_valid_topic_name(&stream) {
            return Err(ConfigError::new(
                &at,
                format!("stream name {stream:?} is not a valid topic name ([a-z0-9_-]{{1,255}})"),
            ));
        }
        if self.streams.contains_key(&key) {
            return Err(ConfigError::new(&at, "the topic key is listed twice"));
        }
        if let Some((other, _)) = self.streams.iter().find(|(_, s)| **s == stream) {
            return Err(ConfigError::new(
                &at,
                format!("stream {stream:?} is already the stream of topic key {other:?}"),
            ));
        }
        self.streams.insert(key, stream);
        Ok(())
    }

    /// The stream of `key`, if registered (directly or as a dead-letter key).
    pub fn stream(&self, key: &str) -> Option<String> {
        if let Some(stream) = self.streams.get(key) {
            return Some(stream.clone());
        }
        let base = key.strip_suffix(DEAD_LETTER_SUFFIX)?;
        self.stream(base).map(|s| s + DEAD_LETTER_SUFFIX)
    }

    /// Spread topic `key` over `buckets` streams (`<stream>#0` … `<stream>#<n-1>`, each its
    /// own hash slot), so one busy topic can use several masters of a Redis Cluster. A
    /// message goes to the bucket of its partition key ([`bucket_of`]): per-key order and
    /// publish dedup hold as with one stream; order across keys of different buckets is not
    /// kept (it never was across keys). Consumers read every bucket. Change the count only on
    /// a drained topic: a key's bucket moves with it. The default, 1, is the stream alone.
    pub fn set_buckets(&mut self, key: &str, buckets: u16) -> Result<(), ConfigError> {
        let at = format!("topics.{key}.buckets");
        if !self.streams.contains_key(key) {
            return Err(ConfigError::new(&at, "the topic key is not registered"));
        }
        if !(1..=BUCKETS_MAX).contains(&buckets) {
            return Err(ConfigError::new(
                &at,
                format!("expected an integer from 1 to {BUCKETS_MAX}, found {buckets}"),
            ));
        }
        if buckets == 1 {
            self.buckets.remove(key);
        } else {
            self.buckets.insert(key.to_owned(), buckets);
        }
        Ok(())
    }

    /// How many streams topic `key` is spread over (a dead-letter key: as many as its topic).
    pub fn buckets(&self, key: &str) -> u16 {
        let base = match self.streams.contains_key(key) {
            true => key,
            false => key.strip_suffix(DEAD_LETTER_SUFFIX).unwrap_or(key),
        };
        self.buckets.get(base).copied().unwrap_or(1)
    }

    /// Every stream of `key`, one per bucket, if registered.
    pub fn streams(&self, key: &str) -> Option<Vec<String>> {
        let (base, suffix) = match self.streams.contains_key(key) {
            true => (key, ""),
            false => (key.strip_suffix(DEAD_LETTER_SUFFIX)?, DEAD_LETTER_SUFFIX),
        };
        let stream = self.streams.get(base)?;
        let n = self.buckets(base);
        Some(
            (0..n)
                .map(|b| bucket_stream(stream, n, b) + suffix)
                .collect(),
        )
    }

    /// The stream a message of `key` with `partition_key` goes to, if registered.
    pub fn stream_for(&self, key: &str, partition_key: &str) -> Option<String> {
        let streams = self.streams(key)?;
        let n = streams.len() as u16;
        streams
            .into_iter()
            .nth(usize::from(bucket_of(partition_key, n)))
    }

    /// Every registered (key, stream).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.streams.iter().map(|(k, s)| (k.as_str(), s.as_str()))
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The dotted key the problem is about (empty for the whole file).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong, without the key.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "config key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parse a duration: `250ms`, `60s`, `5m`, `24h`, `7d`, or a whole number of seconds. `None`
/// for anything else, including a duration too long to represent.
pub fn parse_duration(text: &str) -> Option<Duration> {
    match read_duration(text) {
        Read::Duration(d) => Some(d),
        Read::TooLong | Read::Invalid => None,
    }
}

enum Read {
    Duration(Duration),
    /// Well formed, but beyond what a `Duration` holds.
    TooLong,
    Invalid,
}

fn read_duration(text: &str) -> Read {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Ok(value) = number.parse::<f64>() else {
        return Read::Invalid;
    };
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Read::Invalid,
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Read::Invalid;
    }
    Duration::try_from_secs_f64(secs).map_or(Read::TooLong, Read::Duration)
}

/// A duration as a person would write it: `250ms`, `60s`, `5m`, `24h`, `365d`; one that is not
/// a whole number of milliseconds as `Debug` shows it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if Duration::from_millis(ms.min(u64::MAX as u128) as u64) != d {
        return format!("{d:?}");
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        "0s".to_owned()
    } else {
        format!("{ms}ms")
    }
}

/// The values a duration key accepts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The least.
    pub min: Duration,
    /// The most.
    pub max: Duration,
}

impl Bounds {
    const fn new(min: Duration, max: Duration) -> Bounds {
        Bounds { min, max }
    }

    /// Whether `d` is within.
    pub fn contains(&self, d: Duration) -> bool {
        self.min <= d && d <= self.max
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}..={}",
            format_duration(self.min),
            format_duration(self.max)
        )
    }
}

const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// `redis.dedup_ttl`: the dedup key's `PX`, so at least a second and at most a year.
pub const DEDUP_TTL: Bounds = Bounds::new(Duration::from_secs(1), days(365));
/// `redis.shutdown_deadline`.
pub const SHUTDOWN_DEADLINE: Bounds = Bounds::new(Duration::ZERO, Duration::from_secs(3600));
/// `redis.trim_interval`: more often than every 10 ms would be a busy loop.
pub const TRIM_INTERVAL: Bounds = Bounds::new(Duration::from_millis(10), days(1));
/// `redis.consumer_idle_removal`.
pub const CONSUMER_IDLE_REMOVAL: Bounds = Bounds::new(Duration::from_secs(1), days(365));
/// `redis.wait_timeout`.
pub const WAIT_TIMEOUT: Bounds = Bounds::new(Duration::from_millis(1), Duration::from_secs(60));
/// `redis.wait_replicas`: 0 to this.
pub const WAIT_REPLICAS_MAX: u32 = 16;
/// `subscriptions.<name>.visibility_timeout`.
pub const VISIBILITY_TIMEOUT: Bounds = Bounds::new(Duration::from_millis(10), days(7));
/// `subscriptions.<name>.backoff.initial` and `.max`.
pub const BACKOFF: Bounds = Bounds::new(Duration::ZERO, days(1));
/// `subscriptions.<name>.batch_size` and `.max_attempts`: 1 to this.
pub const COUNT_MAX: u64 = 1_000_000;
/// `subscriptions.<name>.backoff.multiplier`.
pub const MULTIPLIER: std::ops::RangeInclusive<f64> = 1.0..=100.0;

/// Every duration key and its bounds (`<name>` is a subscription's name).
pub const RANGES: [(&str, Bounds); 8] = [
    ("redis.dedup_ttl", DEDUP_TTL),
    ("redis.wait_timeout", WAIT_TIMEOUT),
    ("redis.shutdown_deadline", SHUTDOWN_DEADLINE),
    ("redis.trim_interval", TRIM_INTERVAL),
    ("redis.consumer_idle_removal", CONSUMER_IDLE_REMOVAL),
    (
        "subscriptions.<name>.visibility_timeout",
        VISIBILITY_TIMEOUT,
    ),
    ("subscriptions.<name>.backoff.initial", BACKOFF),
    ("subscriptions.<name>.backoff.max", BACKOFF),
];

fn in_bounds(
    at: &str,
    d: Duration,
    shown: impl fmt::Display,
    bounds: Bounds,
) -> Result<Duration, ConfigError> {
    if bounds.contains(d) {
        Ok(d)
    } else {
        Err(out_of_range(at, shown, bounds))
    }
}

fn out_of_range(at: &str, shown: impl fmt::Display, bounds: impl fmt::Display) -> ConfigError {
    ConfigError::new(at, format!("{shown} is out of range ({bounds})"))
}

impl RedisConfig {
    /// Check every value against its range and the TLS and credential keys against each
    /// other; each problem names its key. Files are not read here.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (key, value, bounds) in [
            ("redis.dedup_ttl", self.dedup_ttl, DEDUP_TTL),
            (
                "redis.shutdown_deadline",
                self.shutdown_deadline,
                SHUTDOWN_DEADLINE,
            ),
            ("redis.trim_interval", self.trim_interval, TRIM_INTERVAL),
            (
                "redis.consumer_idle_removal",
                self.consumer_idle_removal,
                CONSUMER_IDLE_REMOVAL,
            ),
            ("redis.wait_timeout", self.wait_timeout, WAIT_TIMEOUT),
        ] {
            in_bounds(key, value, format_duration(value), bounds)?;
        }
        if self.wait_replicas > WAIT_REPLICAS_MAX {
            return Err(ConfigError::new(
                "redis.wait_replicas",
                format!(
                    "expected an integer from 0 to {WAIT_REPLICAS_MAX}, found {}",
                    self.wait_replicas
                ),
            ));
        }
        check_url_scheme(&self.url)?;
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "redis.tls_key_file",
                    "is required with redis.tls_cert_file (the client certificate's private key)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "redis.tls_cert_file",
                    "is required with redis.tls_key_file (the certificate of the private key)",
                ))
            }
            _ => {}
        }
        if self.username.as_deref() == Some("") {
            return Err(ConfigError::new("redis.username", "must not be empty"));
        }
        if self.tls_server_name.as_deref() == Some("") {
            return Err(ConfigError::new(
                "redis.tls_server_name",
                "must not be empty",
            ));
        }
        if self.key_prefix.is_empty() {
            return Err(ConfigError::new("redis.key_prefix", "must not be empty"));
        }
        Ok(())
    }

    /// The `tls_*` keys that are set (by key name), for refusing them on a plaintext URL.
    pub fn tls_keys_set(&self) -> Vec<&'static str> {
        [
            ("redis.tls_ca_file", self.tls_ca_file.is_some()),
            ("redis.tls_cert_file", self.tls_cert_file.is_some()),
            ("redis.tls_key_file", self.tls_key_file.is_some()),
            ("redis.tls_server_name", self.tls_server_name.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// Take the password from the environment: `REDIS_PASSWORD` (the password) or
    /// `REDIS_PASSWORD_FILE` (a file holding it), over `password_file` and the URL's. Both set
    /// is an error; an empty value counts as unset.
    pub fn apply_password_env<I, K, V>(&mut self, env: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (mut value, mut file) = (None, None);
        for (name, v) in env {
            match name.as_ref() {
                "REDIS_PASSWORD" if !v.as_ref().is_empty() => value = Some(v.as_ref().to_owned()),
                "REDIS_PASSWORD_FILE" if !v.as_ref().is_empty() => {
                    file = Some(PathBuf::from(v.as_ref()))
                }
                _ => {}
            }
        }
        match (value, file) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "REDIS_PASSWORD",
                "REDIS_PASSWORD and REDIS_PASSWORD_FILE are both set: set one of them",
            )),
            (Some(value), None) => {
                self.password = Some(Password::with_origin(value, "REDIS_PASSWORD"));
                Ok(())
            }
            (None, Some(path)) => {
                self.password_file = Some(path);
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// The password to connect with when not the URL's: `password`, else the contents of
    /// `password_file`; `None` leaves the URL's (if any). A file that cannot be read, is not
    /// UTF-8 or is empty is an error naming the file (never its contents).
    pub fn resolve_password(&self) -> Result<Option<Password>, ConfigError> {
        if let Some(password) = &self.password {
            return Ok(Some(password.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let key = "redis.password_file";
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::new(key, format!("{} is not UTF-8", path.display())))?;
        let password = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if password.is_empty() {
            return Err(ConfigError::new(
                key,
                format!("{} is empty", path.display()),
            ));
        }
        Ok(Some(Password::with_origin(
            password,
            format!("password file {}", path.display()),
        )))
    }
}

/// Check a subscription's values against their ranges; `at` is its dotted key
/// (`subscriptions.<name>`).
pub fn check_subscription(at: &str, sub: &SubscriptionConfig) -> Result<(), ConfigError> {
    for (key, value) in [
        ("batch_size", sub.batch_size as u64),
        ("max_attempts", u64::from(sub.max_attempts)),
    ] {
        if !(1..=COUNT_MAX).contains(&value) {
            return Err(ConfigError::new(
                &format!("{at}.{key}"),
                format!("expected an integer from 1 to {COUNT_MAX}, found {value}"),
            ));
        }
    }
    for (key, value, bounds) in [
        (
            "visibility_timeout",
            sub.visibility_timeout,
            VISIBILITY_TIMEOUT,
        ),
        ("backoff.initial", sub.backoff.initial, BACKOFF),
        ("backoff.max", sub.backoff.max, BACKOFF),
    ] {
        in_bounds(
            &format!("{at}.{key}"),
            value,
            format_duration(value),
            bounds,
        )?;
    }
    let m = sub.backoff.multiplier;
    if !MULTIPLIER.contains(&m) {
        return Err(out_of_range(
            &format!("{at}.backoff.multiplier"),
            m,
            "1..=100",
        ));
    }
    Ok(())
}

impl Config {
    /// Parse TOML text, then apply `KEYWAY__...` overrides from `env`.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, env, &[]).map(|(config, _)| config)
    }

    /// Like [`Config::from_toml`], leaving the top-level `sections` named to the application:
    /// they come back as they are (environment overrides applied), for it to read.
    pub fn from_toml_with(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        sections: &[&str],
    ) -> Result<(Config, toml::Table), ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("", format!("invalid TOML: {e}")))?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (name, value) in &env {
            apply_override(&mut table, name, value)?;
        }
        let mut theirs = toml::Table::new();
        for section in sections {
            if let Some(value) = table.remove(*section) {
                theirs.insert((*section).to_owned(), value);
            }
        }
        let mut config = Config::from_table(&table)?;
        config.redis.apply_password_env(env)?;
        // The files are read now, so a missing or broken one stops the start with its name;
        // they are read again when connecting.
        config.redis.resolve_password()?;
        super::tls::check_files(&config.redis)?;
        Ok((config, theirs))
    }

    /// Check every value against its range (see [`RANGES`]) and the keys against each other,
    /// as loading does; for a configuration built in code. Files are not read.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.redis.check()?;
        for (name, sub) in &self.subscriptions {
            check_subscription(&format!("subscriptions.{name}"), sub)?;
        }
        Ok(())
    }

    /// Read a TOML file, with overrides from the process environment.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &[]).map(|(config, _)| config)
    }

    /// Read a TOML file like [`Config::load`], leaving `sections` to the application (see
    /// [`Config::from_toml_with`]).
    pub fn load_with(
        path: &std::path::Path,
        sections: &[&str],
    ) -> Result<(Config, toml::Table), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        Config::from_toml_with(&text, std::env::vars(), sections)
    }

    fn from_table(table: &toml::Table) -> Result<Config, ConfigError> {
        let mut redis = RedisConfig::default();
        let mut registry = Registry::default();
        let mut subscriptions = BTreeMap::new();
        for (section, value) in table {
            match section.as_str() {
                "redis" => {
                    for (key, value) in as_table(section, value)? {
                        let at = format!("redis.{key}");
                        match key.as_str() {
                            "url" => {
                                let url = as_str(&at, value)?;
                                check_url_scheme(url)?;
                                redis.url = url.to_owned();
                            }
                            "username" => redis.username = Some(as_str(&at, value)?.to_owned()),
                            "password" => {
                                return Err(ConfigError::new(
                                    &at,
                                    "is not a key: keep the password out of the configuration file, \
                                     in a file named by redis.password_file or REDIS_PASSWORD_FILE, \
                                     or in REDIS_PASSWORD",
                                ))
                            }
                            "password_file" => redis.password_file = Some(as_path(&at, value)?),
                            "tls_ca_file" => redis.tls_ca_file = Some(as_path(&at, value)?),
                            "tls_cert_file" => redis.tls_cert_file = Some(as_path(&at, value)?),
                            "tls_key_file" => redis.tls_key_file = Some(as_path(&at, value)?),
                            "tls_server_name" => {
                                redis.tls_server_name = Some(as_str(&at, value)?.to_owned())
                            }
                            "key_prefix" => redis.key_prefix = as_str(&at, value)?.to_owned(),
                            "dedup_ttl" => redis.dedup_ttl = as_duration(&at, value, DEDUP_TTL)?,
                            "shutdown_deadline" => {
                                redis.shutdown_deadline =
                                    as_duration(&at, value, SHUTDOWN_DEADLINE)?
                            }
                            "trim_interval" => {
                                redis.trim_interval = as_duration(&at, value, TRIM_INTERVAL)?
                            }
                            "consumer_idle_removal" => {
                                redis.consumer_idle_removal =
                                    as_duration(&at, value, CONSUMER_IDLE_REMOVAL)?
                            }
                            "wait_replicas" => {
                                redis.wait_replicas = match value.as_integer() {
                                    Some(n) if (0..=i64::from(WAIT_REPLICAS_MAX)).contains(&n) => {
                                        n as u32
                                    }
                                    Some(n) => {
                                        return Err(ConfigError::new(
                                            &at,
                                            format!(
                                                "expected an integer from 0 to {WAIT_REPLICAS_MAX}, found {n}"
                                            ),
                                        ))
                                    }
                                    None => return Err(wrong(&at, "an integer", value)),
                                }
                            }
                            "wait_timeout" => {
                                redis.wait_timeout = as_duration(&at, value, WAIT_TIMEOUT)?
                            }
                            "eviction_policy" => {
                                redis.eviction_policy = match as_str(&at, value)? {
                                    "warn" => EvictionCheck::Warn,
                                    "refuse" => EvictionCheck::Refuse,
                                    other => {
                                        return Err(ConfigError::new(
                                            &at,
                                            format!(
                                                "expected \"warn\" or \"refuse\", found {other:?}"
                                            ),
                                        ))
                                    }
                                }
                            }
                            _ => return Err(unknown(&at)),
                        }
                    }
                }
                "topics" => {
                    for (key, value) in as_table(section, value)? {
                        let at = format!("topics.{key}");
                        let Some(table) = value.as_table() else {
                            let stream = as_str(&at, value)?;
                            registry.insert(key.clone(), stream.to_owned())?;
                            continue;
                        };
                        let mut stream = key.clone();
                        let mut buckets = 1;
                        for (name, v) in table {
                            let key_at = format!("{at}.{name}");
                            match name.as_str() {
                                "stream" => stream = as_str(&key_at, v)?.to_owned(),
                                "buckets" => {
                                    buckets = match v.as_integer() {
                                        Some(n) if (1..=i64::from(BUCKETS_MAX)).contains(&n) => {
                                            n as u16
                                        }
                                        Some(n) => {
                                            return Err(ConfigError::new(
                                                &key_at,
                                                format!(
                                                    "expected an integer from 1 to {BUCKETS_MAX}, found {n}"
                                                ),
                                            ))
                                        }
                                        None => {
                                            return Err(wrong(&key_at, "a positive integer", v))
                                        }
                                    }
                                }
                                _ => return Err(unknown(&key_at)),
                            }
                        }
                        registry.insert(key.clone(), stream)?;
                        registry.set_buckets(key, buckets)?;
                    }
                }
                "subscriptions" => {
                    for (name, value) in as_table(section, value)? {
                        let at = format!("subscriptions.{name}");
                        let sub = subscription(&at, as_table(&at, value)?)?;
                        subscriptions.insert(name.clone(), sub);
                    }
                }
                _ => return Err(unknown(section)),
            }
        }
        redis.check()?;
        for (name, sub) in &subscriptions {
            if registry.stream(&sub.topic).is_none() {
                return Err(ConfigError::new(
                    &format!("subscriptions.{name}.topic"),
                    format!("topic key {:?} is not in [topics]", sub.topic),
                ));
            }
        }
        Ok(Config {
            redis,
            registry,
            subscriptions,
        })
    }
}

fn subscription(at: &str, table: &toml::Table) -> Result<SubscriptionConfig, ConfigError> {
    let need = |key: &str| {
        table
            .get(key)
            .ok_or_else(|| ConfigError::new(&format!("{at}.{key}"), "is required"))
    };
    let topic = as_str(&format!("{at}.topic"), need("topic")?)?;
    let group = as_str(&format!("{at}.group"), need("group")?)?;
    if group.is_empty() {
        return Err(ConfigError::new(
            &format!("{at}.group"),
            "must not be empty",
        ));
    }
    let mut sub = match table.get("preset") {
        None => SubscriptionConfig::new(topic, group),
        Some(v) => match as_str(&format!("{at}.preset"), v)? {
            "dead-letter-consumer" => SubscriptionConfig::dead_letter_consumer(topic, group),
            other => {
                return Err(ConfigError::new(
                    &format!("{at}.preset"),
                    format!("unknown preset {other:?}; the one preset is \"dead-letter-consumer\""),
                ))
            }
        },
    };
    for (key, value) in table {
        let key_at = format!("{at}.{key}");
        match key.as_str() {
            "topic" | "group" | "preset" => {}
            "batch_size" => sub.batch_size = as_count(&key_at, value)? as usize,
            "max_attempts" => sub.max_attempts = as_count(&key_at, value)? as u32,
            "visibility_timeout" => {
                sub.visibility_timeout = as_duration(&key_at, value, VISIBILITY_TIMEOUT)?
            }
            "dead_letter" => sub.dead_letter = as_bool(&key_at, value)?,
            "retry_every_error" => sub.retry_every_error = as_bool(&key_at, value)?,
            "backoff" => {
                for (bkey, bvalue) in as_table(&key_at, value)? {
                    let b_at = format!("{key_at}.{bkey}");
                    match bkey.as_str() {
                        "initial" => sub.backoff.initial = as_duration(&b_at, bvalue, BACKOFF)?,
                        "max" => sub.backoff.max = as_duration(&b_at, bvalue, BACKOFF)?,
                        "multiplier" => {
                            let m = match bvalue {
                                toml::Value::Float(f) => *f,
                                toml::Value::Integer(i) => *i as f64,
                                other => return Err(wrong(&b_at, "a number", other)),
                            };
                            if !MULTIPLIER.contains(&m) {
                                return Err(out_of_range(&b_at, m, "1..=100"));
                            }
                            sub.backoff.multiplier = m;
                        }
                        _ => return Err(unknown(&b_at)),
                    }
                }
            }
            _ => return Err(unknown(&key_at)),
        }
    }
    Ok(sub)
}

fn unknown(at: &str) -> ConfigError {
    ConfigError::new(at, "unknown key")
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn wrong(at: &str, expected: &str, found: &toml::Value) -> ConfigError {
    ConfigError::new(
        at,
        format!("expected {expected}, found {}", type_name(found)),
    )
}

fn as_table<'a>(at: &str, v: &'a toml::Value) -> Result<&'a toml::Table, ConfigError> {
    v.as_table().ok_or_else(|| wrong(at, "a table", v))
}

fn as_str<'a>(at: &str, v: &'a toml::Value) -> Result<&'a str, ConfigError> {
    v.as_str().ok_or_else(|| wrong(at, "a string", v))
}

fn as_bool(at: &str, v: &toml::Value) -> Result<bool, ConfigError> {
    v.as_bool().ok_or_else(|| wrong(at, "true or false", v))
}

fn as_path(at: &str, v: &toml::Value) -> Result<PathBuf, ConfigError> {
    match as_str(at, v)? {
        "" => Err(ConfigError::new(at, "must not be empty")),
        path => Ok(PathBuf::from(path)),
    }
}

fn as_count(at: &str, v: &toml::Value) -> Result<u64, ConfigError> {
    match v.as_integer() {
        Some(n) if n >= 1 && n as u64 <= COUNT_MAX => Ok(n as u64),
        Some(n) => Err(ConfigError::new(
            at,
            format!("expected an integer from 1 to {COUNT_MAX}, found {n}"),
        )),
        None => Err(wrong(at, "a positive integer", v)),
    }
}

/// A duration (a string with a unit, or whole seconds) within `bounds`.
fn as_duration(at: &str, v: &toml::Value, bounds: Bounds) -> Result<Duration, ConfigError> {
    match v {
        toml::Value::Integer(n) => match u64::try_from(*n) {
            Ok(secs) => in_bounds(at, Duration::from_secs(secs), format!("{n}s"), bounds),
            Err(_) => Err(out_of_range(at, format!("{n}s"), bounds)),
        },
        toml::Value::String(s) => match read_duration(s) {
            Read::Duration(d) => in_bounds(at, d, s.trim(), bounds),
            Read::TooLong => Err(out_of_range(at, s.trim(), bounds)),
            Read::Invalid => Err(ConfigError::new(
                at,
                format!(
                    "expected a duration such as \"250ms\", \"60s\", \"5m\", \"24h\" or \"7d\", found {s:?}"
                ),
            )),
        },
        other => Err(wrong(at, "a duration such as \"60s\"", other)),
    }
}

/// Apply `KEYWAY__A__B=value` to the table.
fn apply_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let Some(path) = name.strip_prefix("KEYWAY__") else {
        return Ok(());
    };
    let segments: Vec<&str> = path.split("__").collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::new(
            name,
            "environment override has an empty segment",
        ));
    }
    let matches = |key: &str, segment: &str| key.replace('-', "_").eq_ignore_ascii_case(segment);
    let mut cursor = table;
    let mut dotted = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let key = cursor
            .keys()
            .find(|k| matches(k, segment))
            .cloned()
            .unwrap_or_else(|| segment.to_ascii_lowercase());
        dotted.push(key.clone());
        if i + 1 == segments.len() {
            cursor.insert(key, scalar(value));
            return Ok(());
        }
        let next = cursor
            .entry(key)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = next.as_table_mut().ok_or_else(|| {
            ConfigError::new(
                &dotted.join("."),
                format!("environment override {name} goes through a value that is not a table"),
            )
        })?;
    }
    Ok(())
}

fn scalar(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [redis]
        url = "redis://127.0.0.1:7000"
        dedup_ttl = "48h"

        [topics]
        runway-merge = "runway-merge"
        merge-signal = "merge-signal-v2"

        [subscriptions.mergesignal]
        topic = "merge-signal"
        group = "orchestrator"
        batch_size = 20
        backoff = { initial = "250ms", multiplier = 3, max = "1m" }

        [subscriptions.reconciler]
        topic = "merge-signal_dlq"
        group = "reconciler"
        preset = "dead-letter-consumer"
    "#;

    #[test]
    fn urls_print_without_their_password() {
        for (url, shown) in [
            (
                "redis://app:s3cret@10.0.0.5:6379/2",
                "redis://app:***@10.0.0.5:6379/2",
            ),
            ("rediss://:s3cret@host", "rediss://:***@host"),
            ("redis://s3cret@host:1?x=@", "redis://***@host:1?x=@"),
            ("redis://a:b:c@d@host", "redis://a:***@host"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:pa/ss@h:1/0", "redis://:***@h:1/0"),
            ("redis://u:p?w#d@h", "redis://u:***@h"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn only_redis_schemes_are_accepted() {
        for ok in [
            "redis://h",
            "REDISS://h",
            "redis-cluster://h:7000?node=h:7001",
        ] {
            assert!(check_url_scheme(ok).is_ok(), "{ok}");
        }
        let e = check_url_scheme("http://u:pw@127.0.0.1:6390").unwrap_err();
        assert_eq!(e.key(), "redis.url");
        let text = e.to_string();
        assert!(
            text.contains("`http://` is not a Redis URL scheme"),
            "{text}"
        );
        assert!(!text.contains("pw"), "{text}");
        assert!(check_url_scheme("127.0.0.1:6379").is_err());
        let toml = "[redis]\nurl = \"http://127.0.0.1\"";
        let e = Config::from_toml(toml, vec![]).unwrap_err();
        assert_eq!(e.key(), "redis.url");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_example_with_defaults() {
        let c = Config::from_toml(EXAMPLE, env(&[])).unwrap();
        assert_eq!(c.redis.url, "redis://127.0.0.1:7000");
        assert_eq!(c.redis.dedup_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(
            c.registry.stream("merge-signal").unwrap(),
            "merge-signal-v2"
        );
        assert_eq!(
            c.registry.stream("merge-signal_dlq").unwrap(),
            "merge-signal-v2_dlq"
        );
        assert_eq!(c.registry.stream("nope"), None);
        let s = &c.subscriptions["mergesignal"];
        assert_eq!((s.batch_size, s.max_attempts, s.dead_letter), (20, 3, true));
        assert_eq!(s.visibility_timeout, Duration::from_secs(60));
        assert_eq!(s.backoff.initial, Duration::from_millis(250));
        assert_eq!(s.backoff.delay(1), Duration::from_millis(250));
        assert_eq!(s.backoff.delay(3), Duration::from_millis(2250));
        assert_eq!(s.backoff.delay(30), Duration::from_secs(60));
        let r = &c.subscriptions["reconciler"];
        assert_eq!(
            (r.max_attempts, r.dead_letter, r.retry_every_error),
            (1000, false, true)
        );
    }

    #[test]
    fn environment_overrides_name_keys_loosely() {
        let c = Config::from_toml(
            EXAMPLE,
            env(&[
                ("KEYWAY__REDIS__URL", "redis://10.0.0.5:6379"),
                ("KEYWAY__SUBSCRIPTIONS__MERGESIGNAL__BATCH_SIZE", "50"),
                ("KEYWAY__TOPICS__RUNWAY_MERGE", "runway-merge-blue"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.redis.url, "redis://10.0.0.5:6379");
        assert_eq!(c.subscriptions["mergesignal"].batch_size, 50);
        assert_eq!(
            c.registry.stream("runway-merge").unwrap(),
            "runway-merge-blue"
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        for (text, overrides, message) in [
            ("[redis]\nurl = 5", vec![], "config key `redis.url`: expected a string, found an integer"),
            ("[redis]\ncolour = \"red\"", vec![], "config key `redis.colour`: unknown key"),
            ("[topics]\nBad = \"x\"", vec![], "config key `topics.Bad`: the topic key is not a valid topic name"),
            ("[topics]\na = \"s\"\nb = \"s\"", vec![], "config key `topics.b`: stream \"s\" is already the stream of topic key \"a\""),
            ("[topics]\na = \"a\"\n[subscriptions.x]\ntopic = \"a\"", vec![], "config key `subscriptions.x.group`: is required"),
            ("[topics]\na = \"a\"\n[subscriptions.x]\ntopic = \"b\"\ngroup = \"g\"", vec![], "config key `subscriptions.x.topic`: topic key \"b\" is not in [topics]"),
            ("[topics]\na = \"a\"\n[subscriptions.x]\ntopic = \"a\"\ngroup = \"g\"\nbatch_size = 0", vec![], "config key `subscriptions.x.batch_size`: expected an integer from 1 to 1000000, found 0"),
            ("[topics]\na = \"a\"\n[subscriptions.x]\ntopic = \"a\"\ngroup = \"g\"\nvisibility_timeout = \"soon\"", vec![], "config key `subscriptions.x.visibility_timeout`: expected a duration"),
            ("[topics]\na = \"a\"\n[subscriptions.x]\ntopic = \"a\"\ngroup = \"g\"", vec![("KEYWAY__SUBSCRIPTIONS__X__MAX_ATTEMPTS", "many")], "config key `subscriptions.x.max_attempts`: expected a positive integer, found a string"),
            ("[redis", vec![], "invalid TOML"),
        ] {
            let err = Config::from_toml(text, env(&overrides)).unwrap_err().to_string();
            assert!(err.starts_with(message), "{text}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("10 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        // Too long for a `Duration`: no panic, no value.
        assert_eq!(parse_duration("100000000000000000000"), None);
        assert_eq!(parse_duration("1e400"), None);
        for (d, shown) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(86400), "1d"),
            (Duration::from_nanos(1), "1ns"),
        ] {
            assert_eq!(format_duration(d), shown);
        }
    }

    fn error(text: &str) -> String {
        Config::from_toml(text, env(&[])).unwrap_err().to_string()
    }

    const SUB: &str = "[topics]\na = \"a\"\n[subscriptions.x]\ntopic = \"a\"\ngroup = \"g\"\n";

    #[test]
    fn every_duration_and_count_is_range_checked_at_load() {
        for (text, message) in [
            (
                "[redis]\ndedup_ttl = \"100000000000000000000\"".to_owned(),
                "config key `redis.dedup_ttl`: 100000000000000000000 is out of range (1s..=365d)",
            ),
            (
                "[redis]\ndedup_ttl = \"3000000000000h\"".to_owned(),
                "config key `redis.dedup_ttl`: 3000000000000h is out of range (1s..=365d)",
            ),
            (
                "[redis]\ndedup_ttl = 0".to_owned(),
                "config key `redis.dedup_ttl`: 0s is out of range (1s..=365d)",
            ),
            (
                "[redis]\ndedup_ttl = \"500ms\"".to_owned(),
                "config key `redis.dedup_ttl`: 500ms is out of range (1s..=365d)",
            ),
            (
                "[redis]\nshutdown_deadline = \"2h\"".to_owned(),
                "config key `redis.shutdown_deadline`: 2h is out of range (0s..=1h)",
            ),
            (
                "[redis]\ntrim_interval = \"1ms\"".to_owned(),
                "config key `redis.trim_interval`: 1ms is out of range (10ms..=1d)",
            ),
            (
                "[redis]\nconsumer_idle_removal = -5".to_owned(),
                "config key `redis.consumer_idle_removal`: -5s is out of range (1s..=365d)",
            ),
            (
                format!("{SUB}visibility_timeout = 9223372036854775807"),
                "config key `subscriptions.x.visibility_timeout`: 9223372036854775807s is out of range (10ms..=7d)",
            ),
            (
                format!("{SUB}visibility_timeout = \"5ms\""),
                "config key `subscriptions.x.visibility_timeout`: 5ms is out of range (10ms..=7d)",
            ),
            (
                format!("{SUB}backoff = {{ initial = \"2d\" }}"),
                "config key `subscriptions.x.backoff.initial`: 2d is out of range (0s..=1d)",
            ),
            (
                format!("{SUB}backoff = {{ max = \"1000000000000000000000000s\" }}"),
                "config key `subscriptions.x.backoff.max`: 1000000000000000000000000s is out of range (0s..=1d)",
            ),
            (
                format!("{SUB}backoff = {{ multiplier = 1000 }}"),
                "config key `subscriptions.x.backoff.multiplier`: 1000 is out of range (1..=100)",
            ),
            (
                format!("{SUB}batch_size = 1000001"),
                "config key `subscriptions.x.batch_size`: expected an integer from 1 to 1000000, found 1000001",
            ),
            (
                format!("{SUB}max_attempts = -1"),
                "config key `subscriptions.x.max_attempts`: expected an integer from 1 to 1000000, found -1",
            ),
            (
                "[redis]\nwait_replicas = 17".to_owned(),
                "config key `redis.wait_replicas`: expected an integer from 0 to 16, found 17",
            ),
            (
                "[redis]\nwait_timeout = \"61s\"".to_owned(),
                "config key `redis.wait_timeout`: 61s is out of range (1ms..=1m)",
            ),
        ] {
            assert_eq!(error(&text), message, "{text}");
        }
        // The bounds themselves load.
        let edges = format!(
            "[redis]\ndedup_ttl = \"365d\"\nshutdown_deadline = 0\ntrim_interval = \"10ms\"\n\
             consumer_idle_removal = \"1s\"\n{SUB}visibility_timeout = \"7d\"\n\
             backoff = {{ initial = 0, max = \"24h\", multiplier = 100 }}"
        );
        let c = Config::from_toml(&edges, env(&[])).unwrap();
        assert_eq!(c.redis.dedup_ttl, Duration::from_secs(365 * 86400));
        assert_eq!(
            c.subscriptions["x"].visibility_timeout,
            Duration::from_secs(7 * 86400)
        );
        assert!(c.check().is_ok());
    }

    #[test]
    fn a_configuration_built_in_code_gets_the_same_checks() {
        let mut c = Config::from_toml(SUB, env(&[])).unwrap();
        c.redis.dedup_ttl = Duration::MAX;
        let e = c.check().unwrap_err();
        assert_eq!(e.key(), "redis.dedup_ttl");
        assert!(e.message().ends_with("is out of range (1s..=365d)"), "{e}");
        c.redis.dedup_ttl = Duration::from_secs(60);
        c.subscriptions.get_mut("x").unwrap().visibility_timeout = Duration::ZERO;
        assert_eq!(
            c.check().unwrap_err().to_string(),
            "config key `subscriptions.x.visibility_timeout`: 0s is out of range (10ms..=7d)"
        );
        let sub = c.subscriptions.get_mut("x").unwrap();
        sub.visibility_timeout = Duration::from_secs(1);
        sub.backoff.multiplier = f64::NAN;
        assert_eq!(
            c.check().unwrap_err().key(),
            "subscriptions.x.backoff.multiplier"
        );
        // Every bound in the table is checked by some key.
        for (key, bounds) in RANGES {
            assert!(bounds.min <= bounds.max, "{key}");
        }
    }

    #[test]
    fn tls_and_credential_keys_load_and_pair() {
        let c = Config::from_toml(
            "[redis]\nurl = \"rediss://h:6380\"\nusername = \"app\"\ntls_server_name = \"redis.internal\"",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.redis.username.as_deref(), Some("app"));
        assert_eq!(c.redis.tls_server_name.as_deref(), Some("redis.internal"));
        assert!(uses_tls(&c.redis.url));
        assert!(!uses_tls("redis://h"));
        assert!(uses_tls("REDISS-CLUSTER://h"));
        assert_eq!(c.redis.tls_keys_set(), ["redis.tls_server_name"]);
        for (text, message) in [
            (
                "[redis]\ntls_cert_file = \"/nonexistent/c.pem\"",
                "config key `redis.tls_key_file`: is required with redis.tls_cert_file",
            ),
            (
                "[redis]\ntls_key_file = \"/nonexistent/k.pem\"",
                "config key `redis.tls_cert_file`: is required with redis.tls_key_file",
            ),
            (
                "[redis]\ntls_ca_file = \"/nonexistent/ca.pem\"",
                "config key `redis.tls_ca_file`: cannot read /nonexistent/ca.pem: ",
            ),
            (
                "[redis]\ntls_server_name = \"not a name\"",
                "config key `redis.tls_server_name`: \"not a name\" is not a DNS name or an IP address",
            ),
            (
                "[redis]\npassword = \"hunter2\"",
                "config key `redis.password`: is not a key: keep the password out of the configuration file",
            ),
            (
                "[redis]\npassword_file = \"/nonexistent/pw\"",
                "config key `redis.password_file`: cannot read /nonexistent/pw: ",
            ),
            ("[redis]\nusername = \"\"", "config key `redis.username`: must not be empty"),
        ] {
            let e = error(text);
            assert!(e.starts_with(message), "{text}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    fn scratch(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keyway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn broken_pem_files_are_named() {
        let junk = scratch("junk.pem", b"not a certificate\n");
        let bad = scratch(
            "bad.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        for (key, path, problem) in [
            ("tls_ca_file", &junk, "no certificate in it"),
            ("tls_ca_file", &bad, "not valid PEM"),
        ] {
            let text = format!("[redis]\n{key} = {:?}", path.display().to_string());
            let e = error(&text);
            assert!(
                e.starts_with(&format!("config key `redis.{key}`: {}: ", path.display())),
                "{e}"
            );
            assert!(e.contains(problem), "{e}");
        }
        let text = format!(
            "[redis]\ntls_cert_file = {:?}\ntls_key_file = {:?}",
            bad.display().to_string(),
            junk.display().to_string()
        );
        assert!(error(&text).starts_with("config key `redis.tls_cert_file`"));
    }

    #[test]
    fn the_password_comes_from_the_url_a_file_or_the_environment() {
        let file = scratch("password", b"s3cret\n");
        let other = scratch("other", b"from-env-file\r\n");
        let empty = scratch("empty", b"\n");
        let toml = format!(
            "[redis]\nurl = \"redis://:in-url@h\"\npassword_file = {:?}",
            file.display().to_string()
        );
        let password = |vars: &[(&str, &str)]| {
            let c = Config::from_toml(&toml, env(vars)).unwrap();
            let p = c.redis.resolve_password().unwrap().unwrap();
            (p.expose().to_owned(), p.origin().to_owned())
        };
        // URL < redis.password_file < REDIS_PASSWORD_FILE < REDIS_PASSWORD.
        assert_eq!(
            password(&[]),
            ("s3cret".into(), format!("password file {}", file.display()))
        );
        let other_path = other.display().to_string();
        assert_eq!(
            password(&[("REDIS_PASSWORD_FILE", other_path.as_str())]).0,
            "from-env-file"
        );
        assert_eq!(
            password(&[("REDIS_PASSWORD", "from-env"), ("REDIS_PASSWORD_FILE", "")]),
            ("from-env".into(), "REDIS_PASSWORD".into())
        );
        let e = Config::from_toml(
            &toml,
            env(&[
                ("REDIS_PASSWORD", "x"),
                ("REDIS_PASSWORD_FILE", other_path.as_str()),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("both set"), "{e}");
        let none = Config::from_toml("[redis]\nurl = \"redis://:in-url@h\"", env(&[])).unwrap();
        assert_eq!(none.redis.resolve_password().unwrap(), None);
        let e = error(&format!(
            "[redis]\npassword_file = {:?}",
            empty.display().to_string()
        ));
        assert!(e.ends_with("is empty"), "{e}");
    }

    #[test]
    fn debug_and_display_never_show_a_password() {
        let file = scratch("shown", b"file-secret\n");
        let toml = format!(
            "[redis]\nurl = \"rediss://app:url-secret@h:6380\"\npassword_file = {:?}\ntls_server_name = \"h.internal\"",
            file.display().to_string()
        );
        let mut c = Config::from_toml(&toml, env(&[("REDIS_PASSWORD", "env-secret")])).unwrap();
        let shown = [
            format!("{c:?}"),
            format!("{:?}", c.redis),
            c.redis.to_string(),
        ];
        for text in &shown {
            for secret in ["url-secret", "env-secret", "file-secret"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        assert_eq!(
            c.redis.to_string(),
            "rediss://app:***@h:6380 (password from REDIS_PASSWORD, TLS with the system roots, server name h.internal)"
        );
        c.redis.password = Some(Password::new("code-secret"));
        assert!(!format!("{:?}", c.redis).contains("code-secret"));
        assert_eq!(Password::new("x").to_string(), "***");
    }

    #[test]
    fn a_topic_in_buckets_names_a_stream_per_bucket() {
        let text = "[topics]\norders = { stream = \"ord\", buckets = 4 }\nplain = \"plain\"\n";
        let c = Config::from_toml(text, env(&[])).unwrap();
        let r = &c.registry;
        assert_eq!(r.buckets("orders"), 4);
        assert_eq!(r.buckets("orders_dlq"), 4);
        assert_eq!(
            r.streams("orders").unwrap(),
            ["ord#0", "ord#1", "ord#2", "ord#3"]
        );
        assert_eq!(r.streams("orders_dlq").unwrap()[2], "ord#2_dlq");
        assert_eq!(r.streams("plain").unwrap(), ["plain"]);
        assert_eq!(r.stream_for("plain", "anything").unwrap(), "plain");
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c: bucket 0 of 4, 11 of 13.
        assert_eq!(bucket_of("a", 4), 0);
        assert_eq!(bucket_of("a", 13), 11);
        // The empty key hashes to the offset basis.
        assert_eq!(bucket_of("", 7), 2);
        let key = "payments";
        assert_eq!(
            r.stream_for("orders", key).unwrap(),
            format!("ord#{}", bucket_of(key, 4))
        );
        // Keys spread: 64 keys reach every bucket.
        let used: std::collections::BTreeSet<u16> =
            (0..64).map(|i| bucket_of(&format!("k{i}"), 4)).collect();
        assert_eq!(used.len(), 4);
        for (text, message) in [
            (
                "[topics]\norders = { buckets = 0 }",
                "config key `topics.orders.buckets`: expected an integer from 1 to 1024, found 0",
            ),
            (
                "[topics]\norders = { buckets = \"4\" }",
                "config key `topics.orders.buckets`: expected a positive integer, found a string",
            ),
            (
                "[topics]\norders = { shards = 4 }",
                "config key `topics.orders.shards`: unknown key",
            ),
        ] {
            let e = Config::from_toml(text, env(&[])).unwrap_err();
            assert_eq!(e.to_string(), message, "{text}");
        }
    }
}
