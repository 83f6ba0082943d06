-- release.lua: end a lease, only while it is still ours, and hand it to the next waiter.
--
-- Run with lua/grant.lua's text before it, wrapped as `local function grant(KEYS, ARGV)`
-- (src/redis_node.rs builds the script so): a hand-off is that very grant, run for the head.
--
-- KEYS[1..10] as lua/grant.lua: lease, fence, holder, waiters, log, init, queue, waiting,
--          epoch, handoff
-- KEYS[11] ended   string: the owner id of the last lease released here, kept for a minute
-- KEYS[12] handed  prefix of the waiters' hand-off boxes: the box of waiter w is
--          KEYS[12] .. ':' .. w, in the lock's slot (the hash tag leads the prefix)
-- ARGV[1] owner id
-- ARGV[2] pub/sub channel the waiters listen on
-- ARGV[3] audit log length cap
-- ARGV[4] how long a waiter registration lasts, ms (grant.lua's ARGV[9])
-- ARGV[5] probation, ms: the TTL of a lease handed to a waiter until it confirms it
-- ARGV[6] '0': hand nothing over, only wake the head: every end of a lease over several masters
--         (a release, or the undo of a losing attempt's vote: the head here may not be first
--         in line elsewhere; see `Node::undo` in src/backend/mod.rs and `Quorum::end`)
-- Reply: 1 released (now, or by this very request before: see below), 0 not ours: nothing
--        changed, -1 not ours and this node knows nothing of the lock (no counter: it
--        restarted empty since): it cannot say whose the lease was
--
-- Hand-off. The head of the queue among live waiters (its registration not lapsed: a waiter
-- that died stops renewing it) is granted the lease here, by grant.lua with the arguments the
-- head registered with its place (KEYS[10], KEYS[8]): its owner id, identity, secret hash,
-- TTL and quarantine. So every rule of a grant holds as if the head had asked itself: the
-- token minted the one way, the restart and failover quarantines (a quarantined node hands
-- nothing off and wakes the head as before), FIFO. The lease runs on ARGV[5] (at most the
-- head's TTL) until the head confirms it (its next grant, with the same owner id, extends it):
-- a head that died after its last heartbeat holds the lock up for the probation, not a TTL.
-- The head's box (KEYS[12] .. ':' .. head, a list that lives as long as the probation) gets
-- "<owner> <token>": the head waits on it with BLPOP on a connection of its own, and takes the
-- lease from it with no round trip of its own. Only a client that may write can push there
-- (a writer can forge a lease outright anyway); the message cannot be trusted so, as anyone
-- who may PUBLISH can send one. The message names the head, its owner id and the token
-- ("<head> <owner> <token>"): a head without a box (one whose box connection broke) tries at
-- once, and its grant finds the lease its own (and says the token; the message's is never
-- taken). A head that cannot be granted is named alone, and only it tries at
-- once. With nobody queued the message says 'released', which wakes every listener.
--
-- A request sent again (a cluster connection resends after a dropped reply or a response
-- timeout; `call_twice` after a broken connection) finds the lease already gone. `ended` names
-- the owner whose release ran last: when it is ours, this is that release again, and it answers
-- as it did (1), rather than "not ours", which would turn a clean run into a lost lease (76).
-- A lease that expired, or was broken or taken, leaves no such record of its owner: still 0.

-- Only one node hands over (src/quorum/ending.rs: several masters only wake the head), and its
-- grant takes the waiter it grants out of the line in the same script: no waiter is still in
-- line under the owner ending here. (Over several masters one could be, granted by a majority
-- while this master still had it queued; a release that hands over there must first drop it,
-- as commit 4c586ac did, or it hands a lease nobody wants and holds the master up for a
-- probation. That scan cost every one-node hand-off an HGETALL of the whole line.)
local function drop(w)
  redis.call('ZREM', KEYS[7], w)
  redis.call('ZREM', KEYS[4], w)
  redis.call('HDEL', KEYS[8], w)
  redis.call('HDEL', KEYS[10], w)
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('GET', KEYS[11]) == ARGV[1] then return 1 end
  if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
  return 0
end
local h = redis.call('HMGET', KEYS[3], 'session', 'host', 'pid', 'token')
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SET', KEYS[11], ARGV[1], 'PX', 60000)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*',
  'event', 'release', 'owner', ARGV[1], 'session', h[1] or '', 'host', h[2] or '', 'pid', h[3] or '',
  'token', h[4] or '', 'at', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
-- The head among live waiters.
local head
while true do
  head = redis.call('ZRANGE', KEYS[7], 0, 0)[1]
  if not head or redis.call('ZSCORE', KEYS[4], head) then break end
  drop(head)
end
if not head then
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
if ARGV[6] == '0' then
  redis.call('PUBLISH', ARGV[2], head)
  return 1
end

-- The hand-off: the head's own grant, with what it registered.
local function fields(s, n)
  local f = {}
  for part in string.gmatch(s .. '\t', '([^\t]*)\t') do f[#f + 1] = part end
  if #f > n then f[n] = table.concat(f, '\t', n) end
  return f
end
local entry = redis.call('HGET', KEYS[10], head)
local who = redis.call('HGET', KEYS[8], head)
if entry and who then
  local e = fields(entry, 5)
  local w = fields(who, 6)
  local ttl = tonumber(e[2] or '')
  if ttl and ttl > 0 and e[1] ~= '' then
    local probation = math.min(ttl, tonumber(ARGV[5]))
    local r = grant(KEYS, {e[1], probation, w[1] or '', w[2] or '', w[3] or '', w[5] or '',
      e[5] or '', head, ARGV[4], ARGV[3], e[3] or '0', w[6] or '',
      redis.call('ZSCORE', KEYS[7], head), e[4] or ''})
    if r[1] == 1 then
      -- The TTL the holder renews by (a joiner reads it), not the probation.
      redis.call('HSET', KEYS[3], 'ttl_ms', ttl)
      local token = string.format('%d', r[2])
      -- pcall: a user whose ACL lacks these commands (or the key) still hands over and
      -- publishes; the head, boxless, finds the lease its own with its next attempt.
      local box = KEYS[12] .. ':' .. head
      redis.pcall('DEL', box)
      redis.pcall('RPUSH', box, e[1] .. ' ' .. token)
      redis.pcall('PEXPIRE', box, probation)
      redis.call('PUBLISH', ARGV[2], head .. ' ' .. e[1] .. ' ' .. token)
      return 1
    end
  end
end
redis.call('PUBLISH', ARGV[2], head)
return 1
