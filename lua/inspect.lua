-- inspect.lua: read one lock's state for `lock status`, changing nothing.
--
-- KEYS[1] lease    KEYS[2] fence    KEYS[3] holder    KEYS[4] waiters
-- KEYS[5] queue    KEYS[6] waiting (see grant.lua)
-- Reply: {pttl_ms (-2 when free), fence counter, waiting count,
--         {the live queued waiters in line, each "session<TAB>host<TAB>pid<TAB>since_ms"},
--         holder field, value, ...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reply = {
  redis.call('PTTL', KEYS[1]),
  tonumber(redis.call('GET', KEYS[2]) or '0'),
  redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf'),
}
local line = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local until_ms = redis.call('ZSCORE', KEYS[4], id)
  local who = redis.call('HGET', KEYS[6], id)
  if until_ms and tonumber(until_ms) > now and who then line[#line + 1] = who end
end
reply[4] = line
if reply[1] >= 0 then
  local fields = redis.call('HGETALL', KEYS[3])
  for i = 1, #fields do reply[#reply + 1] = fields[i] end
end
return reply
