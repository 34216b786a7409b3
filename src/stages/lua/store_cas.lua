-- ARGV 1 the number of records, 2 the number of lists. Record i's arguments start at ARGV[a]
-- (a = 3 for the first): a its number of sets m, a+1 the version read, a+2 the new version,
-- a+3 the record, a+4 its state, a+5 its id, a+6.. the state of each of its sets; its KEYS are
-- its key, then its m sets. After the records, each list: KEYS its key, ARGV its number of
-- items, then the items.
local function move(r)
  local target, source
  for _, s in ipairs(r.sets) do
    if s[2] == r.state then target = s[1] end
    if s[2] == r.before then source = s[1] end
  end
  if r.before == r.state then
    redis.call('SADD', target, r.id)
  elseif source and redis.call('SMOVE', source, target, r.id) == 1 then
    -- moved from the state it had
  else
    if r.before ~= '' then
      for _, s in ipairs(r.sets) do
        if s[1] ~= target then redis.call('SREM', s[1], r.id) end
      end
    end
    redis.call('SADD', target, r.id)
  end
end

-- Every version is checked before anything is written: all records are written or none.
local records = {}
local a, k = 3, 1
for i = 1, tonumber(ARGV[1]) do
  local m = tonumber(ARGV[a])
  local r = {key = KEYS[k], read = ARGV[a + 1], new = ARGV[a + 2], data = ARGV[a + 3],
    state = ARGV[a + 4], id = ARGV[a + 5], sets = {}}
  for j = 1, m do r.sets[j] = {KEYS[k + j], ARGV[a + 5 + j]} end
  local head = redis.call('HMGET', r.key, 'v', 's')
  local current = head[1] or '0'
  if current == r.read then
    r.write = true
    r.before = current == '0' and '' or (head[2] or '?')
  elseif current == r.new and redis.call('HGET', r.key, 'd') == r.data then
    -- This very write, applied already: the client re-sent it after a lost reply.
    r.before = '?'
  else
    return {0, i}
  end
  records[i] = r
  a, k = a + 6 + m, k + 1 + m
end
local out = {1}
for i, r in ipairs(records) do
  if r.write then redis.call('HSET', r.key, 'v', r.new, 'd', r.data, 's', r.state) end
  if #r.sets > 0 then move(r) end
  out[i + 1] = r.before
end
for _ = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a])
  redis.call('DEL', KEYS[k])
  local from = a + 1
  while from <= a + n do
    local to = math.min(from + 999, a + n)
    redis.call('RPUSH', KEYS[k], unpack(ARGV, from, to))
    from = to + 1
  end
  a, k = a + n + 1, k + 1
end
return out
