-- raise.lua: lift this node's fencing counter to at least a value seen on a quorum.
-- Used with several masters, so that a majority remembers the highest token handed out.
--
-- KEYS[1] fence   integer counter
-- ARGV[1] the token handed out
-- Reply: the counter after the call
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if current < wanted then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return current
