-- inspect.lua: read one lock's state for `lock status`, changing nothing.
--
-- KEYS[1] lease    KEYS[2] fence    KEYS[3] holder    KEYS[4] waiters
-- Reply: {pttl_ms (-2 when free), fence counter, waiting count, holder field, value, ...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reply = {
  redis.call('PTTL', KEYS[1]),
  tonumber(redis.call('GET', KEYS[2]) or '0'),
  redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf'),
}
if reply[1] >= 0 then
  local fields = redis.call('HGETALL', KEYS[3])
  for i = 1, #fields do reply[#reply + 1] = fields[i] end
end
return reply
