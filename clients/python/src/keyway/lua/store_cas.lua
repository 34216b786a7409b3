local head = redis.call('HMGET', KEYS[1], 'v', 's')
local current = head[1] or '0'
local before = ''
if current ~= ARGV[1] then
  -- This very write, applied already: the client re-sent it after a lost reply.
  if current ~= ARGV[2] or redis.call('HGET', KEYS[1], 'd') ~= ARGV[3] then return 0 end
  before = '?'
else
  if current ~= '0' then before = head[2] or '?' end
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 's', ARGV[4])
end
-- The membership sets, when given: KEYS[i] holds the ids in state ARGV[4 + i] (i >= 2).
if #KEYS > 1 then
  local member = ARGV[5]
  local target, source
  for i = 2, #KEYS do
    if ARGV[4 + i] == ARGV[4] then target = KEYS[i] end
    if ARGV[4 + i] == before then source = KEYS[i] end
  end
  if before == ARGV[4] then
    redis.call('SADD', target, member)
  elseif source and redis.call('SMOVE', source, target, member) == 1 then
    -- moved from the state it had
  else
    if before ~= '' then
      for i = 2, #KEYS do
        if KEYS[i] ~= target then redis.call('SREM', KEYS[i], member) end
      end
    end
    redis.call('SADD', target, member)
  end
end
return before
