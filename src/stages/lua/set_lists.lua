local at = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[at])
  redis.call('DEL', KEYS[i])
  local from = at + 1
  while from <= at + n do
    local to = math.min(from + 999, at + n)
    redis.call('RPUSH', KEYS[i], unpack(ARGV, from, to))
    from = to + 1
  end
  at = at + n + 1
end
return #KEYS
