#!lua flags=no-writes
-- ARGV[i] says what KEYS[i] is: 'l' a list (all its items are read), else a record (its `d`).
local out = {}
for i = 1, #KEYS do
  if ARGV[i] == 'l' then
    out[i] = redis.call('LRANGE', KEYS[i], 0, -1)
  else
    out[i] = redis.call('HGET', KEYS[i], 'd')
  end
end
return out
