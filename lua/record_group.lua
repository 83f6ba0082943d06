-- record_group.lua: note in the holder record the process group its command runs in, only while
-- the lease is still this owner's (a same-host takeover then judges the group, not just the pid).
--
-- KEYS[1] lease   string, value = owner id
-- KEYS[2] holder  hash of the holder's metadata
-- ARGV[1] owner id
-- ARGV[2] process group id of the command (its guard's pid)
-- ARGV[3] the group leader's start time (clock ticks after boot; "" when unknown)
-- Reply: 1 recorded, 0 not ours: nothing changed
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'group', ARGV[2], 'group_start', ARGV[3])
return 1
