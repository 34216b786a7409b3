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
  local promoted = release_if_head(pk, id, true)
  cleanup(id, ARGV[7] == '1')
  if #ARGV <= 10 then return {'ok', promoted and 0 or -1} end
  -- The messages the handler staged to go out with its ack, each published as the publish
  -- script does: ARGV 11 the dedup TTL, then per message its id, partition key, payload and
  -- metadata pair count n, then n names and values; KEYS 10.. its stream and dedup key.
  local at = tostring(now_ms())
  local fresh, i, k = {}, 12, 10
  while i <= #ARGV do
    local n = tonumber(ARGV[i + 3])
    if redis.call('SET', KEYS[k + 1], '1', 'NX', 'PX', ARGV[11]) then
      local args = {'XADD', KEYS[k], '*', 'id', ARGV[i], 'pk', ARGV[i + 1], 'at', at, 'payload', ARGV[i + 2], 'v', '1'}
      for j = i + 4, i + 2 + 2 * n, 2 do
        table.insert(args, 'm:' .. ARGV[j])
        table.insert(args, ARGV[j + 1])
      end
      redis.call(unpack(args))
      table.insert(fresh, 1)
    else
      table.insert(fresh, 0)
    end
    i, k = i + 4 + 2 * n, k + 2
  end
  return {'ok', promoted and 0 or -1, fresh}
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
local promoted = release_if_head(pk, id, true)
cleanup(id)
return {written == 1 and 'dead' or 'dropped', promoted and 0 or -1}
