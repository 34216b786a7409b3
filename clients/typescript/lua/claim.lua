local count = tonumber(ARGV[6])
local max_attempts = tonumber(ARGV[5])
local vt = tonumber(ARGV[7])
local scan = ARGV[8] ~= '0'
local out = {}
local more = 0
local scanned = false
local promoted = false
-- The server's clock, read only when something is in `due` or this claim promotes an entry:
-- nothing else needs it.
local now = nil
local function clock()
  if not now then now = now_ms() end
  return now
end
-- A redelivery: its epoch is the PEL's delivery count, its attempt one more than counted.
local function deliver(id, fields)
  local failures = tonumber(redis.call('HGET', KEYS[6], id) or '0')
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local epoch = p[1] and p[1][4] or 0
  table.insert(out, {id, tostring(epoch), tostring(failures + 1), fields})
end

-- The first count + 1 entries by due time: those due now (at most count), and after them the
-- first one not due yet, whose time the loop may sleep until.
local first = redis.call('ZRANGE', KEYS[4], 0, count, 'WITHSCORES')
if first[1] then clock() end
local due = {}
local next_due = nil
for i = 1, #first, 2 do
  if #due < count and tonumber(first[i + 1]) <= now then
    table.insert(due, first[i])
  else
    next_due = first[i + 1]
    break
  end
end
if #due >= count then more = 1 end
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], pad(id))
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'FORCE')
  if claimed[1] and claimed[1][2] then
    deliver(id, claimed[1][2])
  elseif tombstone(id, 'the entry was deleted or trimmed while it waited for redelivery') then
    promoted = true
  end
end

if scan and #out < count then
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
      if release_if_head(pk, id) then promoted = true end
      cleanup(id)
    else
      redis.call('HSET', KEYS[7], id, 'visibility timeout expired')
      deliver(id, e[2])
    end
  end
  for _, id in ipairs(r[3] or {}) do
    if tombstone(id, 'the entry was deleted or trimmed while it was pending') then promoted = true end
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
        if tombstone(id, 'the entry was deleted before it was delivered') then promoted = true end
      else
        local pk = field(fields, 'pk') or ''
        redis.call('HSET', KEYS[8], id, pk)
        if redis.call('HSETNX', KEYS[2], pk, id) == 1 then
          -- The key's head now, read for the first time: delivery count 1, no attempt yet.
          table.insert(out, {id, '1', '1', fields})
        else
          redis.call('XACK', KEYS[1], ARGV[1], id)
          redis.call('ZADD', KEYS[3], 0, wait_prefix(pk) .. pad(id))
          redis.call('ZADD', KEYS[5], 0, pad(id))
        end
      end
    end
  end
end

if #out >= count then more = 1 end
-- An entry this claim promoted (after a dead letter or a tombstone) is due now.
if promoted then
  more = 1
  next_due = tostring(clock())
end

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
return {out, next_due or '-1', tostring(now or -1), more, expires}
