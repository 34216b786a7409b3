local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current ~= ARGV[1] then
  -- This very write, applied already: the client re-sent it after a lost reply.
  if current == ARGV[2] and redis.call('HGET', KEYS[1], 'd') == ARGV[3] then return '?' end
  return 0
end
local before = ''
if current ~= '0' then before = redis.call('HGET', KEYS[1], 's') or '?' end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 's', ARGV[4])
return before
