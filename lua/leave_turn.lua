-- leave_turn.lua: a joiner ends its turn (see lua/join.lua), only while the turn is its own, or
-- leaves the line for it.
--
-- KEYS[1] turn    string, value = "<owner id> <joiner id>" of the joiner whose turn it is
-- KEYS[2] queue   KEYS[3] waiting: the line for that turn (see lua/join.lua), left too
-- ARGV[1] "<owner id> <joiner id>" of the joiner that leaves
-- Reply: 1 ended, 0 not its turn (it lapsed, or was taken from a joiner that was gone)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
