//! Configuration of the Redis backend: the topic registry and the subscriptions, from a TOML
//! file with environment overrides. Every problem names the key it is about.
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379"
//! dedup_ttl = "24h"               # how long publish remembers (topic, partition key, id)
//! eviction_policy = "warn"        # or "refuse" to start unless maxmemory-policy is noeviction
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
//! Environment: `KEYWAY__<SECTION>__<KEY>...=value` overrides a value (segments match keys
//! case-insensitively, `_` matching `-`), e.g. `KEYWAY__REDIS__URL=redis://10.0.0.5:6379` or
//! `KEYWAY__SUBSCRIPTIONS__MERGESIGNAL__BATCH_SIZE=50`.

use std::collections::BTreeMap;
use std::fmt;
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

/// Connection and server-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key Keyway writes. Default `kw`.
    pub key_prefix: String,
    /// How long publish remembers a (topic, partition key, id). Default 24 h; it outlives
    /// consumption, so a late duplicate of a consumed message is still dropped.
    pub dedup_ttl: Duration,
    /// Whether a `maxmemory-policy` other than `noeviction` stops the start. Default warn.
    pub eviction_policy: EvictionCheck,
    /// How long shutdown waits for in-flight deliveries before releasing them. Default 30 s.
    pub shutdown_deadline: Duration,
    /// How often a subscription trims its stream. Default 10 s.
    pub trim_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "kw".into(),
            dedup_ttl: Duration::from_secs(24 * 3600),
            eviction_policy: EvictionCheck::Warn,
            shutdown_deadline: Duration::from_secs(30),
            trim_interval: Duration::from_secs(10),
        }
    }
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
    // The authority ends at the first `/`, `?` or `#`; credentials end at its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
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

/// Parse a duration: `250ms`, `60s`, `5m`, `24h`, or a whole number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = value * scale;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
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
        for (name, value) in env {
            apply_override(&mut table, &name, &value)?;
        }
        let mut theirs = toml::Table::new();
        for section in sections {
            if let Some(value) = table.remove(*section) {
                theirs.insert((*section).to_owned(), value);
            }
        }
        Ok((Config::from_table(&table)?, theirs))
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
                            "key_prefix" => redis.key_prefix = as_str(&at, value)?.to_owned(),
                            "dedup_ttl" => redis.dedup_ttl = as_duration(&at, value)?,
                            "shutdown_deadline" => {
                                redis.shutdown_deadline = as_duration(&at, value)?
                            }
                            "trim_interval" => redis.trim_interval = as_duration(&at, value)?,
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
                        let stream = as_str(&format!("topics.{key}"), value)?;
                        registry.insert(key.clone(), stream.to_owned())?;
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
        if redis.dedup_ttl.is_zero() {
            return Err(ConfigError::new(
                "redis.dedup_ttl",
                "must be more than zero",
            ));
        }
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
            "batch_size" => sub.batch_size = as_positive(&key_at, value)? as usize,
            "max_attempts" => sub.max_attempts = as_positive(&key_at, value)? as u32,
            "visibility_timeout" => {
                sub.visibility_timeout = as_duration(&key_at, value)?;
                if sub.visibility_timeout < Duration::from_millis(10) {
                    return Err(ConfigError::new(&key_at, "must be at least 10ms"));
                }
            }
            "dead_letter" => sub.dead_letter = as_bool(&key_at, value)?,
            "retry_every_error" => sub.retry_every_error = as_bool(&key_at, value)?,
            "backoff" => {
                for (bkey, bvalue) in as_table(&key_at, value)? {
                    let b_at = format!("{key_at}.{bkey}");
                    match bkey.as_str() {
                        "initial" => sub.backoff.initial = as_duration(&b_at, bvalue)?,
                        "max" => sub.backoff.max = as_duration(&b_at, bvalue)?,
                        "multiplier" => {
                            let m = match bvalue {
                                toml::Value::Float(f) => *f,
                                toml::Value::Integer(i) => *i as f64,
                                other => return Err(wrong(&b_at, "a number", other)),
                            };
                            if !(1.0..=100.0).contains(&m) {
                                return Err(ConfigError::new(&b_at, "must be between 1 and 100"));
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

fn as_positive(at: &str, v: &toml::Value) -> Result<u64, ConfigError> {
    match v.as_integer() {
        Some(n) if (1..=1_000_000).contains(&n) => Ok(n as u64),
        Some(n) => Err(ConfigError::new(
            at,
            format!("expected an integer from 1 to 1000000, found {n}"),
        )),
        None => Err(wrong(at, "a positive integer", v)),
    }
}

fn as_duration(at: &str, v: &toml::Value) -> Result<Duration, ConfigError> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        toml::Value::String(s) => parse_duration(s).ok_or_else(|| {
            ConfigError::new(
                at,
                format!("expected a duration such as \"250ms\", \"60s\", \"5m\" or \"24h\", found {s:?}"),
            )
        }),
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
    }
}
