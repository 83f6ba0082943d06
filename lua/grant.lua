-- grant.lua: take a lease if the lock is free, mint its fencing token, record the holder.
--
-- KEYS[1] lease    string, value = owner id of the current lease, expires with PX ttl
-- KEYS[2] fence    integer counter, never expires: the last fencing token minted on this node
-- KEYS[3] holder   hash: who holds (or last held) the lease; deleted on release
-- KEYS[4] waiters  sorted set: waiter id -> expiry (ms, Redis clock); counted by `lock status`
-- KEYS[5] log      stream: this lock's audit trail, capped at ARGV[10] entries
-- KEYS[6] epoch    string, never expires: the time (ms, Redis clock) from which this node grants;
--                  set on the first grant it sees (node-wide, read only when ARGV[11] > 0)
-- ARGV[1]  owner id (random, fresh for every attempt)
-- ARGV[2]  ttl in ms
-- ARGV[3]  session id     ARGV[4] host     ARGV[5] pid
-- ARGV[6]  pid start time (clock ticks after boot, from /proc; "" when unknown)
-- ARGV[7]  command line (display only)
-- ARGV[8]  waiter id: added to KEYS[4] when refused, removed when granted ("" = do not register)
-- ARGV[9]  how long a waiter registration lasts, ms
-- ARGV[10] audit log length cap
-- ARGV[11] quarantine in ms: a node seen without KEYS[6] refuses grants this long, so that a
--          master that restarted empty cannot hand out a lease it forgot (0 = off)
-- ARGV[12] PID namespace of the requester ("" when unknown): a stale-holder check compares it
-- Reply: granted     {1, token}
--        refused     {0, pttl_ms, holder field, value, field, value, ...}
--        quarantined {2, ms until this node grants again}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local quarantine = tonumber(ARGV[11])
if quarantine > 0 then
  local ready = tonumber(redis.call('GET', KEYS[6]) or '')
  if not ready then
    ready = now + quarantine
    redis.call('SET', KEYS[6], ready)
  end
  if now < ready then
    return {2, ready - now}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)

if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[8] ~= '' then
    redis.call('ZADD', KEYS[4], now + tonumber(ARGV[9]), ARGV[8])
    redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[9]))
  end
  local reply = {0, redis.call('PTTL', KEYS[1])}
  local fields = redis.call('HGETALL', KEYS[3])
  for i = 1, #fields do reply[#reply + 1] = fields[i] end
  return reply
end

-- A holder hash without a lease: the previous holder never released; its lease expired.
local previous = redis.call('HMGET', KEYS[3], 'owner', 'session', 'host', 'pid', 'token')
if previous[1] then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[10], '*',
    'event', 'expired', 'owner', previous[1], 'session', previous[2] or '', 'host', previous[3] or '',
    'pid', previous[4] or '', 'token', previous[5] or '', 'at', now)
end

local ttl = tonumber(ARGV[2])
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'owner', ARGV[1], 'session', ARGV[3], 'host', ARGV[4],
  'pid', ARGV[5], 'pid_start', ARGV[6], 'pid_ns', ARGV[12], 'command', ARGV[7], 'acquired_ms', now,
  'ttl_ms', ttl, 'token', token)
if ARGV[8] ~= '' then redis.call('ZREM', KEYS[4], ARGV[8]) end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[10], '*',
  'event', 'grant', 'owner', ARGV[1], 'session', ARGV[3], 'host', ARGV[4], 'pid', ARGV[5], 'token', token,
  'at', now)
return {1, token}
