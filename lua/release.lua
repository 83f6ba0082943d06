-- release.lua: end a lease, only while it is still ours, and wake the waiters.
--
-- KEYS[1] lease   string, value = owner id
-- KEYS[2] holder  hash of the holder's metadata
-- KEYS[3] log     stream: audit trail, capped at ARGV[3] entries
-- ARGV[1] owner id
-- ARGV[2] pub/sub channel the waiters listen on
-- ARGV[3] audit log length cap
-- Reply: 1 released, 0 not ours: nothing changed
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local h = redis.call('HMGET', KEYS[2], 'session', 'host', 'pid', 'token')
redis.call('DEL', KEYS[1], KEYS[2])
local t = redis.call('TIME')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
  'event', 'release', 'owner', ARGV[1], 'session', h[1] or '', 'host', h[2] or '', 'pid', h[3] or '',
  'token', h[4] or '', 'at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('PUBLISH', ARGV[2], 'released')
return 1
