-- raise.lua: lift this node's fencing counter to at least a value seen on a quorum.
-- Used with several masters, so that a majority remembers the highest token handed out.
-- Consistent with grant.lua's clock-based tokens: a raise only lifts the counter, and the next
-- grant mints max(counter + 1, clock), so it stays above the raised value and the clock alike.
--
-- KEYS[1] fence   integer counter
-- ARGV[1] the token handed out
-- Reply: the counter after the call
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if current < wanted then
  -- The argument's own digits: a Lua number would be written as 1e+15 from 10^15 up.
  redis.call('SET', KEYS[1], ARGV[1])
  return wanted
end
return current
