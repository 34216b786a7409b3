//! A queue backend on Redis Streams (Redis 7.0 or newer), with the delivery model of
//! [`crate::transport`]: idempotent publish, consumer groups, one-at-a-time processing per
//! partition key, retries with backoff, postponement, visibility timeouts and atomic dead
//! letters.
//!
//! # Key layout
//!
//! Every key starts with the configured prefix (`kw`) and carries a hash tag: the stream name
//! without any `_dlq` suffix. So a stream, its dead-letter stream and all its groups' state
//! live in one hash slot, and every script touches keys of one slot only (Redis Cluster needs
//! no other layout).
//!
//! | key | type | what |
//! |---|---|---|
//! | `kw:{s}:s:<stream>` | stream | messages: fields `id`, `pk`, `at` (ms), `payload`, `v` (the protocol version, `1`), `m:<metadata key>` |
//! | `kw:{s}:d:<stream>:<len(pk)>:<pk>:<id>` | string, TTL | publish dedup; outlives consumption |
//! | `kw:{s}:g:<stream>:<group>:heads` | hash | partition key → entry being worked on |
//! | `kw:{s}:g:<stream>:<group>:waiting` | zset | entries parked behind their key's head |
//! | `kw:{s}:g:<stream>:<group>:due` | zset | entries to deliver again at a time (retry, postpone) |
//! | `kw:{s}:g:<stream>:<group>:held` | zset | every waiting or due entry (trim bound) |
//! | `kw:{s}:g:<stream>:<group>:attempts` / `errors` / `pks` | hash | per entry: failed attempts, last error, partition key |
//! | `kw:{s}:g:<stream>:<group>:wake` | stream (at most 1 entry) | wakes the group's other consume loops when one stops |
//! | `kw:{s}:s:<stream>_dlq` | stream | dead letters: the original fields plus `m:dlq.original_topic`, `m:dlq.failure_count`, `m:dlq.last_error`, `m:dlq.failed_at`, `m:dlq.stream_entry`, `m:dlq.detail.*`; an entry that could not be read at all is dead-lettered as `id=malformed:<entry>`, `m:dlq.malformed=1` with its fields under `raw:` |
//!
//! A topic in buckets (`Registry::set_buckets`) has one stream per bucket, `<stream>#<b>`,
//! each with all of the keys above under its own tag `{<stream>#<b>}`; a message goes to the
//! bucket that [`config::bucket_of`] gives its partition key.
//!
//! The layout is written down for other languages in `docs/wire-protocol.md`; an entry whose `v`
//! is another protocol version is neither delivered nor dead-lettered: the consume loop stops
//! with an error naming it, and a stream whose newest entry has another version is refused on
//! first use.
//!
//! The scripts are the files in `runtime/lua/` (embedded here, and loaded from the same files
//! by clients in other languages); their keys, arguments and invariants are in `scripts.rs`.
//!
//! # Facts of Redis that shape this
//!
//! - `XACK` does not check the consumer: every settle is fenced in a script on the PEL's
//!   consumer and delivery count.
//! - `XCLAIM … TIME` cannot schedule a future redelivery: retries and postponements wait in the
//!   `due` set and are re-claimed with `XCLAIM … FORCE`.
//! - `XADD MAXLEN` and `XTRIM` drop pending entries: streams are never capped on publish, only
//!   trimmed below what every group still needs; an entry deleted underneath anyway becomes a
//!   tombstone dead letter.
//! - The client re-sends in-flight commands after a reconnect: publishing only goes through the
//!   dedup script, and a consumer re-reads its own pending entries regularly and after every
//!   reconnect, so a claim whose reply was lost strands nothing.
//! - Blocking reads get their own connection and a 1 s block, so shutdown is prompt.
//! - A consumer stays in its group after its process is gone: every consume loop removes, now
//!   and then, the group's consumers that have nothing pending and have been idle longer than
//!   `redis.consumer_idle_removal` (`XGROUP DELCONSUMER` would drop pending entries with the
//!   consumer, so check and removal are one script), and reports the group's consumers,
//!   pending entries and lag as gauges.
//! - Every configured duration and count is range-checked at load and at connect; a delay a
//!   handler asks for (`Outcome::Postpone`) is capped at a year, so no `now + delay` on the
//!   server can overflow.
//!
//! # Connections
//!
//! `rediss://` is TLS with rustls (see `tls.rs`): the server's certificate is verified
//! against the system roots or `redis.tls_ca_file`, for the URL's host or
//! `redis.tls_server_name`, with an optional client certificate. The password may come from
//! the URL, a file or the environment (precedence in [`config`]); no URL, error or log line
//! shows it.

mod backend;
pub mod config;
pub mod embedded;
mod embedded_cluster;
mod scripts;
mod tls;

pub use backend::{Preflight, RedisBackend, Shutdown, ShutdownTrigger, Stored, PROTOCOL_VERSION};
pub use config::{
    Backoff, Bounds, Config, ConfigError, EvictionCheck, Password, RedisConfig, Registry,
    SubscriptionConfig,
};
pub use embedded::{EmbeddedOptions, EmbeddedRedis, EmbeddedSecurity, EmbeddedTls};
pub use embedded_cluster::{ClusterNode, EmbeddedCluster};
