//! The Lua scripts of the Redis backend (the files in `runtime/lua/`, embedded here). Every
//! state change of a delivery happens inside one script, so it is atomic and, with
//! `appendfsync always`, durable once acknowledged. A group script is `helpers.lua` followed by
//! its own file.
//!
//! Group scripts take the same `KEYS` (all in one hash slot, see the module docs):
//!
//! | # | key | type | holds |
//! |---|---|---|---|
//! | 1 | stream | stream | the messages |
//! | 2 | heads | hash | partition key → the one entry of that key the group is working on |
//! | 3 | waiting | zset (lex) | `<len>:<pk>:<padded id>` of entries parked behind their key's head |
//! | 4 | due | zset | entry id → time (ms) it may be delivered again (retry, postpone, release, promoted) |
//! | 5 | held | zset (lex) | padded ids of every entry in `waiting` or `due` (the trim bound) |
//! | 6 | attempts | hash | entry id → counted failed attempts (nacks and visibility timeouts) |
//! | 7 | errors | hash | entry id → the last failure's reason |
//! | 8 | pks | hash | entry id → partition key, for every entry the group is responsible for |
//! | 9 | dead letters | stream | `<stream>_dlq` |
//!
//! and the same leading `ARGV`: 1 group, 2 consumer, 3 topic key, 4 dead-lettering on (`1`/`0`),
//! 5 max attempts.
//!
//! Invariants the scripts keep, per group:
//! - I1: a partition key has at most one entry in the PEL ∪ `due`, its head (`heads[pk]`);
//!   every later entry of the key is in `waiting`, in stream order. So one key is processed one
//!   at a time, in publish order, whatever the number of consumers.
//! - I2: an entry outside the PEL that the group still owes work on is in `held` (so trimming,
//!   which never passes the smallest held id, the smallest pending id, or the group's
//!   last-delivered id, never removes it).
//! - I3: a state change on a delivered entry is fenced: it applies only if the PEL still names
//!   the same consumer and delivery count (the count is the lease epoch: every reclaim bumps
//!   it), so a slow worker cannot settle an entry that was handed to someone else.
//! - I4: dead-lettering (`XADD` to the dead-letter stream) and removal from the PEL happen in
//!   the same script: there is no moment where the message is in neither stream.
//! - I5: time is the server's (`TIME`), never a client clock.
//!
//! What the scripts tell the consume loop, so it claims only when there may be something to
//! claim (the loop's side is in `backend.rs`, at `run`):
//! - W1: a settle that makes an entry claimable (a retry, a postponement, a release, or the
//!   promotion of the next entry of its key) says when; nothing else a settle does makes a
//!   claim find more.
//! - W2: a claim says whether it may have left claimable work behind (`more`); when it says
//!   no, calling again finds nothing until time passes (a due time, a visibility timeout) or
//!   something happens (a publish, which the loop's blocking read sees; a settle, W1).
//! - W3: a claim says how long until the first pending entry of the group may pass the
//!   visibility timeout, when it can tell.
//!
//! Dead letters copy the entry's fields (less any `m:dlq.*` of an earlier dead-lettering) and
//! add `m:dlq.*` fields; two kinds of entry cannot be copied as they are:
//! - a tombstone (the entry was deleted or trimmed): `id` = `tombstone:<entry id>`, `pk` as the
//!   group recorded it, `at` = `0`, empty `payload`, `v` = `1`, `m:dlq.tombstone` = `1`;
//! - D1, a malformed entry (an envelope field missing, repeated or unreadable; the consume loop
//!   judges, see `read_envelope`): `id` = `malformed:<entry id>`, empty `pk`, `at` = `0`, empty
//!   `payload`, `v` = `1`, `m:dlq.malformed` = `1`, and every field of the entry, in order and byte for
//!   byte, under its name prefixed with `raw:`. So the dead letter itself is well formed and
//!   reaches whoever reads the dead letters, and nothing of the entry is lost.
//!
//! D2: the reasons a dead letter adds, `m:dlq.last_error` and every `m:dlq.detail.*` value,
//! are at most 1024 bytes, cut on a UTF-8 boundary and ending in `… [cut from <n> bytes]` when
//! they were longer (the `cap` helper): a handler that echoes a huge input cannot make a huge
//! dead letter. The entry's own fields are the message and are copied whole.

/// Shared helpers, prefixed to every group script.
const HELPERS: &str = include_str!("../../lua/helpers.lua");

/// Idempotent publish. KEYS: 1 stream, 2 dedup key. ARGV: 1 dedup TTL (ms), 2 message id,
/// 3 partition key, 4 payload, then metadata key/value pairs.
/// Returns the new entry id, or 0 when (topic, partition key, id) was published before: the
/// dedup key outlives consumption (its own TTL), so a late duplicate is still dropped.
pub(crate) const PUBLISH: &str = include_str!("../../lua/publish.lua");

/// Hand out up to ARGV[6] deliveries to consumer ARGV[2]; ARGV[7] is the visibility timeout
/// (ms); ARGV[8], when `0`, skips the scan for expired entries (the loop scans by the time
/// W3 says). In order: entries whose due time has come (retries, postponed, released, promoted
/// heads), then entries idle past the visibility timeout (a crashed or stuck worker: counts an
/// attempt; dead-lettered at max attempts), then new entries (each becomes its key's head, or
/// waits behind it: I1). Deleted or trimmed entries met on the way are dead-lettered as
/// tombstones.
///
/// Returns `{deliveries, next_due_ms, now_ms, more, expires_in_ms}` where each delivery is
/// `{id, epoch, attempt, fields}`:
/// - `more` (W2) is `1` when a step stopped at its count (the due entries, the expired
///   entries or the new entries filled what was asked, or the deliveries did) or this claim
///   promoted an entry that is due now, so calling again at once may find work; `0` when
///   every step found less than it could take: no due entry is due and nothing is unread,
///   and no pending entry is expired unless the `XAUTOCLAIM` scan stopped early (its cursor
///   is not `0-0`, and `expires_in_ms` is `-2`). Every `1` consumed or promoted something, so
///   a loop that calls again while it is `1` cannot spin on one state. (A scan that stopped
///   early is not `1`: `XAUTOCLAIM` starts at `0-0` every time, so calling again would scan
///   the same entries.)
/// - `expires_in_ms` (W3) is how long until the first entry of the group's PEL may pass the
///   visibility timeout (`vt - idle`, at least 1), `-1` when the PEL is empty (so nothing can
///   expire within a visibility timeout from now: what is claimed later is idle from then),
///   or `-2` when unknown (the claim did not scan, `more` is `1`, the `XAUTOCLAIM` scan
///   stopped before the PEL's end, or the PEL has 100 entries or more). An entry's expiry only moves later (a reclaim or an
///   extension resets its idle time), so this is a lower bound a loop may sleep until.
/// - `now_ms` is the server's time, read only when `due` holds something or the claim
///   promoted an entry; otherwise it is `-1`, and so is `next_due_ms`, the one figure it is
///   read with.
const CLAIM_BODY: &str = include_str!("../../lua/claim.lua");

/// Re-deliver this consumer's own pending entries that are not in flight in this process
/// (ARGV[7..] lists those in flight): after a reconnect, a claim whose reply was lost left
/// entries in the PEL that nobody here is working on. They are listed with `XPENDING` (no side
/// effects, so in-flight entries keep their epoch) and re-claimed to bump theirs. Not counted as
/// an attempt. ARGV[6] is the most to return. Returns the claim script's delivery list shape.
const RECOVER_BODY: &str = include_str!("../../lua/recover.lua");

/// Settle one delivery. ARGV: 6 entry id, 7 epoch (delivery count), 8 action (`ack`, `nack`,
/// `postpone`, `reject`, `malformed`, `release`, `extend`), 9 delay (ms, for
/// nack/postpone/release), 10 reason, then detail key/value pairs. `malformed` is a reject
/// whose dead letter takes the D1 shape. Returns `{status, due_in_ms}`. Fenced (I3): the
/// status is `stale` when the entry is no longer this consumer's at this epoch. Otherwise
/// `ok`, `retry` (nack below max attempts), `dead` (dead-lettered) or `dropped` (failed with
/// dead-lettering off). `due_in_ms` (W1) is when this settle made an entry claimable: the
/// delay of a retry, postponement or release, `0` when it promoted the next entry of the
/// key, `-1` when it made nothing claimable.
const SETTLE_BODY: &str = include_str!("../../lua/settle.lua");

/// Trim the stream below what every group may still need (I2). KEYS: 1 stream, then each
/// group's `held` key; ARGV: the group names in the same order. A group the caller did not
/// list (created meanwhile) stops the trim (`-1`). No groups: nothing is trimmed (messages wait
/// for their first consumer). Returns the number of entries removed.
pub(crate) const TRIM: &str = include_str!("../../lua/trim.lua");

/// The claim script, with its helpers.
pub(crate) fn claim() -> String {
    format!("{HELPERS}{CLAIM_BODY}")
}

/// The recover script, with its helpers.
pub(crate) fn recover() -> String {
    format!("{HELPERS}{RECOVER_BODY}")
}

/// The settle script, with its helpers.
pub(crate) fn settle() -> String {
    format!("{HELPERS}{SETTLE_BODY}")
}
