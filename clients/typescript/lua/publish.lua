if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local t = redis.call('TIME')
local at = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local args = {'XADD', KEYS[1], '*', 'id', ARGV[2], 'pk', ARGV[3], 'at', at, 'payload', ARGV[4], 'v', '1'}
for i = 5, #ARGV, 2 do
  table.insert(args, 'm:' .. ARGV[i])
  table.insert(args, ARGV[i + 1])
end
return redis.call(unpack(args))
