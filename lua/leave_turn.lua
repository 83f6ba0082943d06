-- leave_turn.lua: a joiner ends its turn (see lua/join.lua), only while the turn is its own.
--
-- KEYS[1] turn    string, value = "<owner id> <joiner id>" of the joiner whose turn it is
-- ARGV[1] "<owner id> <joiner id>" of the joiner that leaves
-- Reply: 1 ended, 0 not its turn (it lapsed, or was taken from a joiner that was gone)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
