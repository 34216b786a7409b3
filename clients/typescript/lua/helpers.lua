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
-- Forget what the group kept of an entry it is done with. `first` says it was on its first
-- delivery (epoch 1): no attempt or error can have been recorded for it then.
local function cleanup(id, first)
  if not first then
    redis.call('HDEL', KEYS[6], id)
    redis.call('HDEL', KEYS[7], id)
  end
  redis.call('HDEL', KEYS[8], id)
end
-- The head of `pk` is done: promote the next waiting entry of the key (due now), or free it.
-- `held` is true when the caller knows `id` is the head: a settle that passed the fence (I3)
-- acts on an entry in the PEL, and by I1 only a key's head is. Returns true when an entry was
-- promoted (W1: the caller tells its loop to claim).
local function release_if_head(pk, id, held)
  if not pk or (not held and redis.call('HGET', KEYS[2], pk) ~= id) then return false end
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
    for _, v in ipairs({'id', 'malformed:' .. id, 'pk', '', 'at', '0', 'payload', '', 'v', '1', 'm:dlq.malformed', '1'}) do
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
    for _, v in ipairs({'id', 'tombstone:' .. id, 'pk', pk or '', 'at', '0', 'payload', '', 'v', '1', 'm:dlq.tombstone', '1'}) do
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
-- Returns true when the next entry of its key was promoted (it is due now).
local function tombstone(id, reason)
  local pk = redis.call('HGET', KEYS[8], id)
  local failures = tonumber(redis.call('HGET', KEYS[6], id) or '0')
  redis.call('XACK', KEYS[1], ARGV[1], id)
  dead_letter(id, nil, reason, failures, {'kind', 'tombstone'}, pk)
  local promoted = release_if_head(pk, id)
  cleanup(id)
  return promoted
end
