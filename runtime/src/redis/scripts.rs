//! The Lua scripts of the Redis backend. Every state change of a delivery happens inside one
//! script, so it is atomic and, with `appendfsync always`, durable once acknowledged.
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
//!   group recorded it, `at` = `0`, empty `payload`, `m:dlq.tombstone` = `1`;
//! - D1, a malformed entry (an envelope field missing, repeated or unreadable; the consume loop
//!   judges, see `read_envelope`): `id` = `malformed:<entry id>`, empty `pk`, `at` = `0`, empty
//!   `payload`, `m:dlq.malformed` = `1`, and every field of the entry, in order and byte for
//!   byte, under its name prefixed with `raw:`. So the dead letter itself is well formed and
//!   reaches whoever reads the dead letters, and nothing of the entry is lost.
//!
//! D2: the reasons a dead letter adds, `m:dlq.last_error` and every `m:dlq.detail.*` value,
//! are at most 1024 bytes, cut on a UTF-8 boundary and ending in `… [cut from <n> bytes]` when
//! they were longer (the `cap` helper): a handler that echoes a huge input cannot make a huge
//! dead letter. The entry's own fields are the message and are copied whole.

/// Shared helpers, prefixed to every group script.
const HELPERS: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function pad(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
local function unpad(p)
  local ms, seq = string.match(p, '^0*(%d+)-0*(%d+)$')
  return ms .. '-' .. seq
end
local function wait_prefix(pk)
  return #pk .. ':' .. pk .. ':'
end
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
-- D2: at most 1024 bytes of `s`, cut before a UTF-8 continuation byte, with a marker.
local function cap(s)
  if #s <= 1024 then return s end
  local marker = '\226\128\166 [cut from ' .. #s .. ' bytes]'
  local keep = 1024 - #marker
  while keep > 0 do
    local b = string.byte(s, keep + 1)
    if b < 128 or b >= 192 then break end
    keep = keep - 1
  end
  return string.sub(s, 1, keep) .. marker
end
local function cleanup(id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('HDEL', KEYS[7], id)
  redis.call('HDEL', KEYS[8], id)
end
-- The head of `pk` is done: promote the next waiting entry of the key (due now), or free it.
-- Returns true when an entry was promoted (W1: the caller tells its loop to claim).
local function release_if_head(pk, id)
  if not pk or redis.call('HGET', KEYS[2], pk) ~= id then return false end
  local prefix = wait_prefix(pk)
  local nxt = redis.call('ZRANGEBYLEX', KEYS[3], '[' .. prefix, '(' .. prefix .. '\255', 'LIMIT', 0, 1)
  if #nxt > 0 then
    redis.call('ZREM', KEYS[3], nxt[1])
    local nid = unpad(string.sub(nxt[1], #prefix + 1))
    redis.call('HSET', KEYS[2], pk, nid)
    redis.call('ZADD', KEYS[4], now_ms(), nid)
    return true
  end
  redis.call('HDEL', KEYS[2], pk)
  return false
end
-- Append a dead letter (I4 holds because callers XACK in the same script). `fields` is nil
-- for a tombstone (the entry was deleted or trimmed). `malformed` is true for an entry whose
-- envelope cannot be read (D1). Returns 1 when written, 0 when dead-lettering is off for this
-- subscription.
local function dead_letter(id, fields, reason, failures, detail, pk, malformed)
  if ARGV[4] ~= '1' then return 0 end
  local args = {'XADD', KEYS[9], '*'}
  if fields and malformed then
    for _, v in ipairs({'id', 'malformed:' .. id, 'pk', '', 'at', '0', 'payload', '', 'm:dlq.malformed', '1'}) do
      table.insert(args, v)
    end
    for i = 1, #fields, 2 do
      table.insert(args, 'raw:' .. fields[i])
      table.insert(args, fields[i + 1])
    end
  elseif fields then
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 6) ~= 'm:dlq.' then
        table.insert(args, fields[i])
        table.insert(args, fields[i + 1])
      end
    end
  else
    for _, v in ipairs({'id', 'tombstone:' .. id, 'pk', pk or '', 'at', '0', 'payload', '', 'm:dlq.tombstone', '1'}) do
      table.insert(args, v)
    end
  end
  local extra = {
    'm:dlq.original_topic', ARGV[3],
    'm:dlq.failure_count', tostring(failures),
    'm:dlq.last_error', cap(reason),
    'm:dlq.failed_at', tostring(now_ms()),
    'm:dlq.stream_entry', id,
  }
  for _, v in ipairs(extra) do table.insert(args, v) end
  for i = 1, #detail, 2 do
    table.insert(args, 'm:dlq.detail.' .. detail[i])
    table.insert(args, cap(detail[i + 1]))
  end
  redis.call(unpack(args))
  return 1
end
local function tombstone(id, reason)
  local pk = redis.call('HGET', KEYS[8], id)
  local failures = tonumber(redis.call('HGET', KEYS[6], id) or '0')
  redis.call('XACK', KEYS[1], ARGV[1], id)
  dead_letter(id, nil, reason, failures, {'kind', 'tombstone'}, pk)
  release_if_head(pk, id)
  cleanup(id)
end
"#;

/// Idempotent publish. KEYS: 1 stream, 2 dedup key. ARGV: 1 dedup TTL (ms), 2 message id,
/// 3 partition key, 4 payload, then metadata key/value pairs.
/// Returns the new entry id, or 0 when (topic, partition key, id) was published before: the
/// dedup key outlives consumption (its own TTL), so a late duplicate is still dropped.
pub(crate) const PUBLISH: &str = r#"
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local t = redis.call('TIME')
local at = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local args = {'XADD', KEYS[1], '*', 'id', ARGV[2], 'pk', ARGV[3], 'at', at, 'payload', ARGV[4]}
for i = 5, #ARGV, 2 do
  table.insert(args, 'm:' .. ARGV[i])
  table.insert(args, ARGV[i + 1])
end
return redis.call(unpack(args))
"#;

/// Hand out up to ARGV[6] deliveries to consumer ARGV[2]; ARGV[7] is the visibility timeout
/// (ms). In order: entries whose due time has come (retries, postponed, released, promoted
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
///   or `-2` when unknown (`more` is `1`, the `XAUTOCLAIM` scan stopped before the PEL's end,
///   or the PEL has 100 entries or more). An entry's expiry only moves later (a reclaim or an
///   extension resets its idle time), so this is a lower bound a loop may sleep until.
const CLAIM_BODY: &str = r#"
local count = tonumber(ARGV[6])
local max_attempts = tonumber(ARGV[5])
local vt = tonumber(ARGV[7])
local out = {}
local more = 0
local scanned = false
local now = now_ms()
local function deliver(id, fields)
  local failures = tonumber(redis.call('HGET', KEYS[6], id) or '0')
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local epoch = p[1] and p[1][4] or 0
  table.insert(out, {id, tostring(epoch), tostring(failures + 1), fields})
end

local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, count)
if #due >= count then more = 1 end
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], pad(id))
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'FORCE')
  if claimed[1] and claimed[1][2] then
    deliver(id, claimed[1][2])
  else
    tombstone(id, 'the entry was deleted or trimmed while it waited for redelivery')
  end
end

if #out < count then
  local want = count - #out
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[7], '0-0', 'COUNT', want)
  if #r[2] + #(r[3] or {}) >= want then more = 1 end
  scanned = r[1] == '0-0'
  for _, e in ipairs(r[2]) do
    local id = e[1]
    local failures = redis.call('HINCRBY', KEYS[6], id, 1)
    if failures >= max_attempts then
      local reason = 'visibility timeout expired on attempt ' .. failures
      local pk = redis.call('HGET', KEYS[8], id)
      redis.call('XACK', KEYS[1], ARGV[1], id)
      dead_letter(id, e[2], reason, failures, {'kind', 'visibility-timeout'}, pk)
      release_if_head(pk, id)
      cleanup(id)
    else
      redis.call('HSET', KEYS[7], id, 'visibility timeout expired')
      deliver(id, e[2])
    end
  end
  for _, id in ipairs(r[3] or {}) do
    tombstone(id, 'the entry was deleted or trimmed while it was pending')
  end
end

if #out < count then
  local want = count - #out
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', KEYS[1], '>')
  if r then
    local entries = r[1][2]
    if #entries >= want then more = 1 end
    for _, e in ipairs(entries) do
      local id, fields = e[1], e[2]
      if not fields then
        tombstone(id, 'the entry was deleted before it was delivered')
      else
        local pk = field(fields, 'pk') or ''
        redis.call('HSET', KEYS[8], id, pk)
        if redis.call('HEXISTS', KEYS[2], pk) == 1 then
          redis.call('XACK', KEYS[1], ARGV[1], id)
          redis.call('ZADD', KEYS[3], 0, wait_prefix(pk) .. pad(id))
          redis.call('ZADD', KEYS[5], 0, pad(id))
        else
          redis.call('HSET', KEYS[2], pk, id)
          deliver(id, fields)
        end
      end
    end
  end
end

if #out >= count then more = 1 end
-- An entry this claim promoted (after a dead letter or a tombstone) is due now.
local next_due = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if next_due[2] and tonumber(next_due[2]) <= now then more = 1 end

local expires = -2
if more == 0 and scanned then
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100)
  if #pending < 100 then
    expires = -1
    for _, p in ipairs(pending) do
      local left = math.max(vt - tonumber(p[3]), 1)
      if expires < 0 or left < expires then expires = left end
    end
  end
end
return {out, next_due[2] or '-1', tostring(now), more, expires}
"#;

/// Re-deliver this consumer's own pending entries that are not in flight in this process
/// (ARGV[7..] lists those in flight): after a reconnect, a claim whose reply was lost left
/// entries in the PEL that nobody here is working on. They are listed with `XPENDING` (no side
/// effects, so in-flight entries keep their epoch) and re-claimed to bump theirs. Not counted as
/// an attempt. ARGV[6] is the most to return. Returns the claim script's delivery list shape.
const RECOVER_BODY: &str = r#"
local count = tonumber(ARGV[6])
local in_flight = {}
for i = 7, #ARGV do in_flight[ARGV[i]] = true end
local out = {}
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', count + #ARGV - 6, ARGV[2])
for _, p in ipairs(pending) do
  local id = p[1]
  if not in_flight[id] and #out < count then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    if claimed[1] and claimed[1][2] then
      local failures = tonumber(redis.call('HGET', KEYS[6], id) or '0')
      local q = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
      local epoch = q[1] and q[1][4] or 0
      table.insert(out, {id, tostring(epoch), tostring(failures + 1), claimed[1][2]})
    else
      tombstone(id, 'the entry was deleted or trimmed while it was pending')
    end
  end
end
return out
"#;

/// Settle one delivery. ARGV: 6 entry id, 7 epoch (delivery count), 8 action (`ack`, `nack`,
/// `postpone`, `reject`, `malformed`, `release`, `extend`), 9 delay (ms, for
/// nack/postpone/release), 10 reason, then detail key/value pairs. `malformed` is a reject
/// whose dead letter takes the D1 shape. Returns `{status, due_in_ms}`. Fenced (I3): the
/// status is `stale` when the entry is no longer this consumer's at this epoch. Otherwise
/// `ok`, `retry` (nack below max attempts), `dead` (dead-lettered) or `dropped` (failed with
/// dead-lettering off). `due_in_ms` (W1) is when this settle made an entry claimable: the
/// delay of a retry, postponement or release, `0` when it promoted the next entry of the
/// key, `-1` when it made nothing claimable.
const SETTLE_BODY: &str = r#"
local id = ARGV[6]
local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
if not p[1] or p[1][2] ~= ARGV[2] or tostring(p[1][4]) ~= ARGV[7] then return {'stale', -1} end
local action = ARGV[8]
if action == 'extend' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', 0, 'JUSTID')
  return {'ok', -1}
end
redis.call('XACK', KEYS[1], ARGV[1], id)
local pk = redis.call('HGET', KEYS[8], id)
local delay = tonumber(ARGV[9])
if action == 'postpone' or action == 'release' then
  redis.call('ZADD', KEYS[4], now_ms() + delay, id)
  redis.call('ZADD', KEYS[5], 0, pad(id))
  return {'ok', delay}
end
if action == 'ack' then
  local promoted = release_if_head(pk, id)
  cleanup(id)
  return {'ok', promoted and 0 or -1}
end
local failures
if action == 'nack' then
  failures = redis.call('HINCRBY', KEYS[6], id, 1)
  redis.call('HSET', KEYS[7], id, ARGV[10])
  if failures < tonumber(ARGV[5]) then
    redis.call('ZADD', KEYS[4], now_ms() + delay, id)
    redis.call('ZADD', KEYS[5], 0, pad(id))
    return {'retry', delay}
  end
else
  failures = tonumber(redis.call('HGET', KEYS[6], id) or '0') + 1
end
local detail = {}
for i = 11, #ARGV do table.insert(detail, ARGV[i]) end
local entry = redis.call('XRANGE', KEYS[1], id, id)
local written = dead_letter(id, entry[1] and entry[1][2] or nil, ARGV[10], failures, detail, pk, action == 'malformed')
local promoted = release_if_head(pk, id)
cleanup(id)
return {written == 1 and 'dead' or 'dropped', promoted and 0 or -1}
"#;

/// Trim the stream below what every group may still need (I2). KEYS: 1 stream, then each
/// group's `held` key; ARGV: the group names in the same order. A group the caller did not
/// list (created meanwhile) stops the trim (`-1`). No groups: nothing is trimmed (messages wait
/// for their first consumer). Returns the number of entries removed.
pub(crate) const TRIM: &str = r#"
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local held_of = {}
for i = 1, #ARGV do held_of[ARGV[i]] = KEYS[i + 1] end
local min_ms = nil
local function consider(id)
  if not id then return end
  local ms = tonumber(string.match(id, '^0*(%d+)-'))
  if ms and (not min_ms or ms < min_ms) then min_ms = ms end
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local held = held_of[info['name']]
  if not held then return -1 end
  consider(info['last-delivered-id'])
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  if pending[1] > 0 then consider(pending[2]) end
  local first = redis.call('ZRANGE', held, 0, 0)
  if first[1] then consider(first[1]) end
end
if not min_ms then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', min_ms .. '-0')
"#;

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
