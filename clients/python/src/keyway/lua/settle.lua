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
  cleanup(id, ARGV[7] == '1')
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
