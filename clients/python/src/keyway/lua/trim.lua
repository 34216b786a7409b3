local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local held_of = {}
for i = 1, #ARGV do held_of[ARGV[i]] = KEYS[i + 1] end
local min_ms = nil
local function consider(id)
  if not id then return end
  local ms = tonumber(string.match(id, '^0*(%d+)-'))
  if ms and (not min_ms or ms < min_ms) then min_ms = ms end
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local held = held_of[info['name']]
  if not held then return -1 end
  consider(info['last-delivered-id'])
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  if pending[1] > 0 then consider(pending[2]) end
  local first = redis.call('ZRANGE', held, 0, 0)
  if first[1] then consider(first[1]) end
end
if not min_ms then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', min_ms .. '-0')
