-- join.lua: confirm a lease to a process that joins it (see src/join.rs), and give that joiner
-- the lease's turn: joiners of one lease take turns. Writes nothing of the lease itself: a
-- joiner cannot extend, shorten or end it.
--
-- KEYS[1] lease   string, value = owner id
-- KEYS[2] fence   the lock's fencing counter: equal to the lease's token while it is held (a
--                 granting node minted it or was raised to it, and nothing grants meanwhile)
-- KEYS[3] holder  hash of the holder's metadata; `join` = SHA-256 (hex) of the lease's secret
-- KEYS[4] log     stream: audit trail, capped at ARGV[9] entries
-- KEYS[5] turn    string, value = "<owner id> <joiner id>": whose turn it is among the joiners
--                 of that lease, expires with PX ARGV[5]; one per nesting depth (a joiner's
--                 command joins under its turn, one deeper). A turn of another lease (one
--                 that ended while a joiner was stopped) is no turn.
-- KEYS[6] parent  the turn one level up (depth 2 and more; else KEYS[5] again)
-- KEYS[7] queue   sorted set: "<owner id> <joiner id>" -> place in line (ARGV[12]) of the
--                 joiners waiting for this turn; lowest first
-- KEYS[8] waiting sorted set: the same members -> registration expiry (ms, Redis clock): a
--                 waiter that stopped asking lapses and is passed over
-- ARGV[1] owner id the joiner names
-- ARGV[2] SHA-256 (hex) of the secret it presents
-- ARGV[3] the token it names
-- ARGV[4] joiner id (random, fresh for every join)
-- ARGV[5] how long a turn lasts without a refresh, ms
-- ARGV[6] joiner's session   ARGV[7] joiner's host   ARGV[8] joiner's pid
-- ARGV[9] audit log length cap
-- ARGV[10] a joiner id to take the turn from (its process is gone), or ""
-- ARGV[11] the joiner one level up whose turn KEYS[6] must be, or "" at depth 1
-- ARGV[12] the joiner's place in line: microseconds since the epoch at its first refusal
-- ARGV[13] how long a waiter's registration lasts, ms (each ask renews it)
-- Reply: {1, lease pttl ms, the holder's ttl ms}  joined (or the turn refreshed: no new event)
--        {0}                                       the lease is not that owner's (ended)
--        {-1}                                      it is, but the secret or token is wrong
--        {2, ms to wait at most, joiner id}        another joiner's turn, or one ahead in line:
--                                                  try again (registered in line)
--
-- Fairness: a free turn goes to the head of the line among live waiters (or to anyone when
-- nobody waits), so a joiner that leaves and asks again at once does not pass those waiting.
local lease = redis.call('GET', KEYS[1])
if lease ~= ARGV[1] then return {0} end
local h = redis.call('HMGET', KEYS[3], 'join', 'session', 'host', 'pid', 'ttl_ms')
if not h[1] or h[1] ~= ARGV[2] or redis.call('GET', KEYS[2]) ~= ARGV[3] then return {-1} end
local mine, of_lease = ARGV[1] .. ' ' .. ARGV[4], ARGV[1] .. ' '
-- The joiner this one works under has left: its capability is stale.
if ARGV[11] ~= '' and redis.call('GET', KEYS[6]) ~= of_lease .. ARGV[11] then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function wait_in_line(left, by)
  local lasts = tonumber(ARGV[13])
  redis.call('ZADD', KEYS[7], 'NX', ARGV[12], mine)
  redis.call('ZADD', KEYS[8], now + lasts, mine)
  redis.call('PEXPIRE', KEYS[7], lasts)
  redis.call('PEXPIRE', KEYS[8], lasts)
  return {2, math.max(1, left), string.sub(by, #of_lease + 1)}
end
local gone = of_lease .. ARGV[10]
if ARGV[10] ~= '' then
  redis.call('ZREM', KEYS[7], gone)
  redis.call('ZREM', KEYS[8], gone)
end
local turn = redis.call('GET', KEYS[5])
if turn and turn ~= mine and turn ~= gone and string.sub(turn, 1, #of_lease) == of_lease then
  return wait_in_line(redis.call('PTTL', KEYS[5]), turn)
end
if turn ~= mine then
  -- The turn is free: the head of the line among live waiters of this lease goes first.
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)
  while true do
    local head = redis.call('ZRANGE', KEYS[7], 0, 0)[1]
    if not head or head == mine then break end
    if redis.call('ZSCORE', KEYS[8], head) and string.sub(head, 1, #of_lease) == of_lease then
      return wait_in_line(20, head)
    end
    redis.call('ZREM', KEYS[7], head)
  end
  redis.call('ZREM', KEYS[7], mine)
  redis.call('ZREM', KEYS[8], mine)
end
redis.call('SET', KEYS[5], mine, 'PX', tonumber(ARGV[5]))
if turn ~= mine then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*',
    'event', 'join', 'owner', ARGV[4], 'session', h[2] or '', 'host', h[3] or '', 'pid', h[4] or '',
    'token', ARGV[3], 'by_session', ARGV[6], 'by_host', ARGV[7], 'by_pid', ARGV[8],
    'at', now)
end
return {1, redis.call('PTTL', KEYS[1]), tonumber(h[5] or '0') or 0}
