-- release.lua: end a lease, only while it is still ours, and wake the next waiter.
--
-- KEYS[1] lease   string, value = owner id
-- KEYS[2] holder  hash of the holder's metadata
-- KEYS[3] log     stream: audit trail, capped at ARGV[3] entries
-- KEYS[4] waiters sorted set: waiter id -> registration expiry (see grant.lua)
-- KEYS[5] queue   sorted set: waiter id -> place in line (see grant.lua)
-- KEYS[6] fence   the lock's fencing counter (only read: does this node know the lock at all?)
-- KEYS[7] ended   string: the owner id of the last lease released here, kept for a minute
-- ARGV[1] owner id
-- ARGV[2] pub/sub channel the waiters listen on
-- ARGV[3] audit log length cap
-- Reply: 1 released (now, or by this very request before: see below), 0 not ours: nothing changed, -1 not ours and this node knows nothing of the
--        lock (no counter: it restarted empty since): it cannot say whose the lease was
--
-- The message names the head of the queue among live waiters: only it tries at once, the
-- others sleep on. With nobody queued it says 'released', which wakes every listener.
--
-- A request sent again (a cluster connection resends after a dropped reply or a response
-- timeout; `call_twice` after a broken connection) finds the lease already gone. `ended` names
-- the owner whose release ran last: when it is ours, this is that release again, and it answers
-- as it did (1), rather than "not ours", which would turn a clean run into a lost lease (76).
-- A lease that expired, or was broken or taken, leaves no such record of its owner: still 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('GET', KEYS[7]) == ARGV[1] then return 1 end
  if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[6]) == 0 then return -1 end
  return 0
end
local h = redis.call('HMGET', KEYS[2], 'session', 'host', 'pid', 'token')
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[7], ARGV[1], 'PX', 60000)
local t = redis.call('TIME')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
  'event', 'release', 'owner', ARGV[1], 'session', h[1] or '', 'host', h[2] or '', 'pid', h[3] or '',
  'token', h[4] or '', 'at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local head
while true do
  head = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
  if not head or redis.call('ZSCORE', KEYS[4], head) then break end
  redis.call('ZREM', KEYS[5], head)
end
redis.call('PUBLISH', ARGV[2], head or 'released')
return 1
