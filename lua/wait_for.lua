-- wait_for.lua: deadlock detection (src/deadlock). Record the wait-for edge of a waiter of this
-- lock ("its process tree holds A, B; it waits for this lock"), read the lock's owner and the
-- live edges of its waiters, and, when a waiter gives up to break a cycle, log a `deadlock`.
--
-- KEYS[1] lease    KEYS[2] holder    KEYS[3] waiters (see grant.lua)
-- KEYS[4] waitfor  hash: waiter id -> edge text (JSON, written and read by src/deadlock only)
-- KEYS[5] log      stream: the lock's audit trail
-- ARGV[1] waiter id whose edge to record ("" = record nothing)
-- ARGV[2] the edge text
-- ARGV[3] how long the edge hash lasts after a write, ms: a hash nobody writes goes away
-- ARGV[4] a cycle to log as a `deadlock` event ("" = none)
-- ARGV[5] session  ARGV[6] host  ARGV[7] pid of who logs it
-- ARGV[8] audit log length cap
-- ARGV[9] most edges returned
-- Reply: {owner id or "", holder session, host, pid, waiter id, edge, waiter id, edge, ...}
--
-- An edge lives as long as its waiter's registration in `waiters` (the queue's heartbeat, renewed
-- by each grant attempt; removed when it is granted or leaves): one whose registration lapsed is
-- deleted here and never returned, so a waiter that died or stopped waiting counts for nothing.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', 'event', 'deadlock',
    'session', ARGV[5], 'host', ARGV[6], 'pid', ARGV[7], 'cycle', ARGV[4], 'at', now)
end
local who = redis.call('HMGET', KEYS[2], 'session', 'host', 'pid')
local reply = {redis.call('GET', KEYS[1]) or '', who[1] or '', who[2] or '', who[3] or ''}
local fields = redis.call('HGETALL', KEYS[4])
local max = tonumber(ARGV[9])
local kept = 0
for i = 1, #fields, 2 do
  local lasts = redis.call('ZSCORE', KEYS[3], fields[i])
  if lasts and tonumber(lasts) > now then
    if kept < max then
      reply[#reply + 1] = fields[i]
      reply[#reply + 1] = fields[i + 1]
      kept = kept + 1
    end
  else
    redis.call('HDEL', KEYS[4], fields[i])
  end
end
return reply
