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
