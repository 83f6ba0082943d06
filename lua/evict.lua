-- evict.lua: end somebody else's lease: an operator's `lock break`, or a waiter taking over
-- from a holder on its own host whose process is gone. Records who did it and wakes the waiters.
--
-- KEYS[1] lease   string, value = owner id
-- KEYS[2] holder  hash of the holder's metadata
-- KEYS[3] log     stream: audit trail, capped at ARGV[3] entries
-- ARGV[1] the owner id the caller read (never ""): a lease of anyone else is kept, so a request
--         that reaches the server twice (a cluster connection resends after a lost reply) cannot
--         end the next holder's lease
-- ARGV[2] pub/sub channel the waiters listen on
-- ARGV[3] audit log length cap
-- ARGV[4] event name ("break" or "takeover")
-- ARGV[5] acting session   ARGV[6] acting host   ARGV[7] acting pid
-- Reply: 1 evicted, 0 nothing to evict (free, or held by another owner than expected)
local owner = redis.call('GET', KEYS[1])
if not owner then return 0 end
if ARGV[1] == '' or owner ~= ARGV[1] then return 0 end
local h = redis.call('HMGET', KEYS[2], 'session', 'host', 'pid', 'token')
redis.call('DEL', KEYS[1], KEYS[2])
local t = redis.call('TIME')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
  'event', ARGV[4], 'owner', owner, 'session', h[1] or '', 'host', h[2] or '', 'pid', h[3] or '',
  'token', h[4] or '', 'by_session', ARGV[5], 'by_host', ARGV[6], 'by_pid', ARGV[7],
  'at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('PUBLISH', ARGV[2], 'released')
return 1
