-- grant.lua: take a lease if the lock is free, mint its fencing token, record the holder.
--
-- KEYS[1] lease    string, value = owner id of the current lease, expires with PX ttl
-- KEYS[2] fence    integer counter, never expires: the last fencing token minted on this node
-- KEYS[3] holder   hash: who holds (or last held) the lease; deleted on release
-- KEYS[4] waiters  sorted set: waiter id -> expiry (ms, Redis clock); counted by `lock status`
-- KEYS[5] log      stream: this lock's audit trail, capped at ARGV[10] entries
-- KEYS[6] init     string in this lock's hash slot, shared by the locks of the slot:
--                  "<run_id>:<master_replid>" of the server run that `lock init` marked as
--                  brand-new (read only when the restart quarantine may apply)
-- KEYS[7] queue    sorted set: waiter id -> place in line (ARGV[13]); lowest first
-- KEYS[8] waiting  hash: waiter id -> "session<TAB>host<TAB>pid<TAB>queued since (ms)<TAB>pid
--                  start<TAB>pid namespace", for `lock status` and to tell a dead waiter
-- KEYS[9] epoch    hash in this lock's hash slot, shared by the locks of the slot: `replid`, the
--                  replication id the slot last granted under, and `until`, the end (ms, Redis
--                  clock) of a failover quarantine; see "Failover quarantine"
-- KEYS[10] handoff hash: waiter id -> "owner<TAB>ttl<TAB>quarantine<TAB>join<TAB>command" (its
--                  ARGV 1, 2, 11, 14, 7): what lua/release.lua needs to grant the lease to the
--                  head of the queue for it (see "Hand-off" there); written with the queue entry
-- ARGV[1]  owner id (random, fresh for every attempt)
-- ARGV[2]  ttl in ms
-- ARGV[3]  session id     ARGV[4] host     ARGV[5] pid
-- ARGV[6]  pid start time (clock ticks after boot, from /proc; "" when unknown)
-- ARGV[7]  command line (display only)
-- ARGV[8]  waiter id: joins (or stays in) the queue, leaves it when granted ("" = not queued)
-- ARGV[9]  how long a waiter registration lasts, ms: each attempt of a queued waiter renews it
-- ARGV[10] audit log length cap
-- ARGV[11] quarantine in ms (0 = off): see "Restart quarantine"
-- ARGV[12] PID namespace of the requester ("" when unknown): a stale-holder check compares it
-- ARGV[13] the waiter's place in line: a score it chose once (microseconds since the epoch at
--          its first refusal), the same on every master, so every master orders the queue alike
--          (equal scores: the lower waiter id first)
-- ARGV[14] SHA-256 (hex) of the lease's secret, kept as the holder record's `join`: a process
--          joining the lease presents the secret (lua/join.lua); the secret is never sent here
-- ARGV[15] (issue 20) a token floor, or 0. A node that finds the lease already the owner's (a
--          hand-off it confirms) lifts its counter and the lease's token to it: the highest
--          token the handing nodes named. A fresh grant mints at least it: on several masters
--          the client proposes its clock plus a small lead, so the masters of one attempt mint
--          the same token and none needs a raise (src/quorum/mod.rs, "Fencing tokens")
-- Reply: granted     {1, token}
--        refused     {0, pttl_ms, holder field, value, field, value, ...}
--                    or, free but another waiter is first in line, {0, ms its place lasts};
--                    either followed by "head:owner", the first waiter's id, "head:host", ...
--                    when another waiter is first in line
--        quarantined {2, ms until this node grants again}
--
-- Tokens: a hybrid logical clock. Each grant mints max(counter + 1, clock), the clock being
-- TIME in microseconds (sec * 10^6 + usec, about 1.8e15, below 2^53 so exact in Lua's doubles),
-- and stores it as the counter. When the clock wins, the counter is written from TIME's digits,
-- never from a Lua number (Redis may format one as 1.8e+15); otherwise it is INCR'd. So a token
-- is above every token this node minted before (the counter) and at least the clock. A node that
-- lost the last grants (restarted empty, or a replica promoted before they reached it) mints
-- from its clock, above every token handed out before, as long as its clock is not behind the
-- old master's by more than the time the restart or failover took (seconds): a token minted at
-- clock C by the old master is at most C plus the tokens minted at the same microsecond, which
-- is far below any later clock reading. A missing counter is the same case (counter 0).
--
-- Restart quarantine. A server that restarted empty forgot the leases it granted. It refuses to
-- grant a lock it does not know (fence counter missing) until its uptime reaches the quarantine
-- (at least the longest TTL), so every lease it may have forgotten has expired first. A server
-- that kept its data is held up too (see "A server that kept its data"). INFO's uptime counts
-- whole seconds from the start's whole second, so it may be up to 1 s ahead: the time left is
-- counted from one second less (never too early). `lock init` marks a brand-new server (KEYS[6]
-- = its run_id and replication id), which skips the quarantine; a restart changes the run_id,
-- so an old marker, even one reloaded from disk, does not count.
--
-- Failover quarantine. A replica promoted to master (Sentinel, Cluster failover, REPLICAOF NO
-- ONE) may lack the last writes of the old master (replication is asynchronous), leases
-- included: it could grant a lease the old master granted and the holder still uses. Promotion
-- gives the node a new replication id (INFO replication: master_replid) and keeps the old one
-- as master_replid2, with second_repl_offset >= 0. The slot's stamp (KEYS[9]) names the replid
-- the slot last granted under (written by the master, replicated with the leases). When the
-- lease is free and the quarantine is on:
--   - `until` in the future: refuse ({2, ms left});
--   - stamp names the current replid: normal rules;
--   - it names another replid, or none, and this node was promoted (second_repl_offset >= 0):
--     the slot refuses every grant for one quarantine from now (`until` = now + ARGV[11]), so
--     every lease the old master granted has expired (a lease is granted before the promotion,
--     and a TTL is at most the quarantine). No operator override: `lock init` on the promoted
--     server cannot know that no lease is in flight. The stamp cannot tell a slot that lost a
--     grant from one migrated in (MIGRATE carries the old master's stamp): a slot moved into a
--     server that was ever promoted waits one quarantine at its first grant too;
--   - otherwise (a restart with or without data, a slot migrated into a never-promoted
--     server): while the uptime is below the quarantine and the server is not marked brand-new,
--     refuse (the restart rule's time left); then stamp the current replid and go on.
-- A server that kept its data (issue 19, finding 7): a restart changes the replid, so the stamp
-- of every slot granted in before it names another replid. Its data may lack the last grants:
--   - a promoted replica restarted with its data (RDB/AOF) before its first grant in a slot,
--     when it had no replica of its own: Redis 7.0.15 gives it a new replid and
--     second_repl_offset -1 (measured), a plain restart; a lease the old master granted just
--     before the promotion and never replicated may still run (tests/it/restart_data.rs);
--   - a master with `appendfsync everysec`, or restarted from a snapshot: the last grants may be
--     lost in a crash while the lock's counter survives.
-- So a free lease in a slot stamped under another replid (or none) waits until the uptime
-- reaches the quarantine, whether the lock's counter survived or not, and the slot is stamped
-- at its first grant after that: every lease granted before the restart has expired by then
-- (granted before it, a TTL at most the quarantine). `lock init`'s marker of this run lifts it,
-- as it lifts the restart rule: it is for brand-new servers only, and it never lifts the
-- failover rule (checked first). The cost: a server that kept its data grants nothing in a slot
-- for up to one quarantine after its start (a slot migrated into a server that young too); a
-- server up longer than the quarantine grants at once.
-- Longest quarantine. Each client sends its own quarantine (ARGV[11]); the stamp keeps the
-- longest one any client sent in this slot (field `quarantine`, raised by the first grant attempt
-- that brings a longer one, replicated with the leases), and both rules use the longer of the two.
-- So a promoted replica holds a slot for the longest quarantine a client of the old master asked
-- for, whoever comes first after the promotion. A server that restarted empty lost the stamp
-- too: there each client's own quarantine counts, and configuring it at least the longest TTL
-- of every client stays the operator's job (`ttl` above `quarantine` is refused client-side).
-- A held lease is refused as always and needs no check: the hot path gains one INFO call when
-- the lease is free, and one HSET per slot and replication id.
-- What Redis 7.0.15 does, measured (tests/it/failover.rs exercises the promotions):
--   - restart without persistence, or with RDB/AOF of a master that never had a replica: new
--     master_replid, second_repl_offset -1: a plain restart;
--   - restart from RDB of a master that had replicas (a backlog): new master_replid, the old one
--     as master_replid2, second_repl_offset >= 0: taken as a promotion (its snapshot may lack the
--     last writes, so the quarantine is right there too);
--   - REPLICAOF NO ONE, a Sentinel failover, CLUSTER FAILOVER on a replica: new master_replid,
--     the old master's as master_replid2, second_repl_offset = offset + 1, run_id unchanged.
--
-- Fairness. A free lease goes only to the head of the queue among live waiters (or to anyone
-- when nobody waits). A waiter whose registration lapsed (it died, or stopped asking) is dropped
-- when it reaches the head, so a dead waiter holds the line up for one registration at most; a
-- live one that lapsed comes back at its old place with its next attempt, as its score is fixed.
-- A refusal names the first in line (`head:` fields); a waiter on the same host, pid namespace
-- and boot id that finds its process gone takes it out of the line at once (src/acquire.rs), so
-- a waiter killed while queued does not hold the next one up for its registration.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- (issue 20) The token floor (ARGV[15]) counts only as digits no more than a minute ahead of
-- this server's clock: a client with a wild clock (or a garbled argument) cannot push the
-- counter out of reach; its masters' tokens then differ and the client raises them, as before.
local floor = '0'
do
  local f = ARGV[15] or '0'
  if string.match(f, '^%d+$') and #f <= 16
    and tonumber(f) <= tonumber(t[1]) * 1000000 + tonumber(t[2]) + 60000000 then
    floor = f
  end
end

local counter = redis.call('GET', KEYS[2])
local known = counter ~= false
local quarantine = tonumber(ARGV[11])
-- This server run's run_id, and its uptime in seconds.
local run_id, uptime
local function server()
  local info = redis.call('INFO', 'server')
  run_id = string.match(info, 'run_id:(%x+)')
  uptime = tonumber(string.match(info, 'uptime_in_seconds:(%d+)') or '')
  if not run_id or not uptime then
    error('INFO server lacks run_id or uptime_in_seconds')
  end
end
-- This node's replication id, and second_repl_offset (>= 0: it was promoted from a replica).
local replid, second
local function replication()
  local info = redis.call('INFO', 'replication')
  replid = string.match(info, 'master_replid:(%x+)')
  second = tonumber(string.match(info, 'second_repl_offset:(%-?%d+)') or '')
  if not replid or not second then
    error('INFO replication lacks master_replid or second_repl_offset')
  end
end
-- `lock init`'s marker of this slot (KEYS[6]): "<run_id>:<master_replid>" of the server when
-- it was marked (src/redis_node/admin.rs); it counts for the restart rule while the run_id is
-- this run's (a master's first replica changes its replid, so that part is not compared). The
-- failover rule has no marker exception: a replica promoted while a lease it never received is
-- held must wait that lease out, whoever marks it.
local function marked()
  if not run_id then server() end
  local marker = redis.call('GET', KEYS[6])
  if not marker then return false end
  return marker == run_id or string.sub(marker, 1, #run_id + 1) == run_id .. ':'
end
-- Our own lease already: this very request ran once and its reply was lost (a cluster
-- connection sends a request again after a dropped connection or a response timeout). The
-- same answer again, rather than a refusal naming ourselves as the holder.
-- (hand-off, issue 20) It is also how a waiter confirms a lease a release handed it: such a
-- lease runs on a short probation TTL until its holder asks, so it is extended to ARGV[2] here.
-- The lease's owner, or false when free: read once (nothing below changes it before the grant,
-- and a script sees no key expire while it runs).
local lease = redis.call('GET', KEYS[1])
if lease == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  redis.call('HSET', KEYS[3], 'ttl_ms', ARGV[2])
  local token = redis.call('HGET', KEYS[3], 'token')
  if tonumber(floor) > tonumber(token or '0') then
    if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(floor) then
      redis.call('SET', KEYS[2], floor)
    end
    redis.call('HSET', KEYS[3], 'token', floor)
    token = floor
  end
  return {1, tonumber(token)}
end
-- A waiter takes (or keeps) its place in line even when refused for a quarantine, so the queue,
-- not the race of the retries, decides who goes first once the quarantine ends.
-- (A key's expiry is only ever pushed later: one waiter's registration must not cut another's
-- longer one short.)
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
local me = ARGV[8]
local lasts = tonumber(ARGV[9])
-- Register (or renew) this waiter for `ms`.
local function register(ms)
  if me == '' then return end
  redis.call('ZADD', KEYS[4], now + ms, me)
  redis.call('ZADD', KEYS[7], ARGV[13], me)
  if redis.call('HEXISTS', KEYS[8], me) == 0 then
    redis.call('HSET', KEYS[8], me, ARGV[3] .. '\t' .. ARGV[4] .. '\t' .. ARGV[5] .. '\t' .. now
      .. '\t' .. ARGV[6] .. '\t' .. ARGV[12])
  end
  for _, k in ipairs({KEYS[4], KEYS[7], KEYS[8]}) do extend(k, ms) end
  -- (hand-off, issue 20) what a release needs to grant it the lease (see KEYS[10])
  redis.call('HSET', KEYS[10], me, ARGV[1] .. '\t' .. ARGV[2] .. '\t' .. ARGV[11] .. '\t' .. ARGV[14]
    .. '\t' .. ARGV[7])
  extend(KEYS[10], ms)
end
-- Refused for a quarantine of `left` ms: the waiter does not ask again before it ends, so its
-- place lasts until then and one registration more (a waiter that dies meanwhile holds the
-- line up for one registration after the quarantine, as any dead waiter does).
local function quarantined(left)
  register(left + lasts)
  return {2, left}
end
-- The longest quarantine any client asked for in this slot, kept in the stamp (KEYS[9]) so that
-- a client configured with a short one cannot cut a quarantine short for clients with long
-- TTLs; see "Longest quarantine".
local function longest(stored)
  return math.max(quarantine, tonumber(stored or '0') or 0)
end
if not known and quarantine > 0 then
  quarantine = longest(redis.call('HGET', KEYS[9], 'quarantine'))
  if not marked() then
    local left = quarantine - (uptime - 1) * 1000
    if left > 0 then
      return quarantined(left)
    end
  end
end
if quarantine > 0 and not lease then
  local stamp = redis.call('HMGET', KEYS[9], 'replid', 'until', 'quarantine')
  if quarantine > (tonumber(stamp[3] or '0') or 0) then
    redis.call('HSET', KEYS[9], 'quarantine', quarantine)
  end
  quarantine = longest(stamp[3])
  local until_ms = tonumber(stamp[2] or '0') or 0
  if until_ms > now then
    return quarantined(until_ms - now)
  end
  if not replid then replication() end
  if stamp[1] ~= replid then
    if second >= 0 then
      redis.call('HSET', KEYS[9], 'replid', replid, 'until', now + quarantine)
      return quarantined(quarantine)
    end
    -- Restart with data (issue 19, finding 7): see "A server that kept its data".
    if not marked() then
      local left = quarantine - (uptime - 1) * 1000
      if left > 0 then
        return quarantined(left)
      end
    end
    redis.call('HSET', KEYS[9], 'replid', replid, 'until', 0)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
-- A free lease that goes to us below is granted without registering us first (issue 20: the
-- registration and its removal were 17 of an uncontended grant's calls, about a quarter of the
-- time of a grant and its release in Redis): nobody is in line, or we are its live head (a
-- woken head's own grant, a hand-off). The same outcome: a registration would only be undone.
local first = redis.call('ZRANGE', KEYS[7], 0, 0)[1]
if lease or (first and not (first == me and redis.call('ZSCORE', KEYS[4], me))) then
  register(lasts)
end
-- The head of the queue among live waiters: lapsed ones ahead of it are dropped.
local head, head_until
while true do
  head = redis.call('ZRANGE', KEYS[7], 0, 0)[1]
  if not head then break end
  head_until = redis.call('ZSCORE', KEYS[4], head)
  if head_until then break end
  redis.call('ZREM', KEYS[7], head)
  redis.call('HDEL', KEYS[8], head)
  redis.call('HDEL', KEYS[10], head)
end

-- A refusal names the waiter first in line when it is another one, as `head:` fields after the
-- holder's: a waiter on its host whose process is gone is taken out of the line at once by the
-- next one (see "Fairness").
local function with_head(reply)
  if not head or head == me then return reply end
  local who = redis.call('HGET', KEYS[8], head)
  if not who then return reply end
  local f = {}
  for part in string.gmatch(who .. '\t', '([^\t]*)\t') do f[#f + 1] = part end
  local names = {'session', 'host', 'pid', 'since', 'pid_start', 'pid_ns'}
  reply[#reply + 1] = 'head:owner'
  reply[#reply + 1] = head
  for i, name in ipairs(names) do
    reply[#reply + 1] = 'head:' .. name
    reply[#reply + 1] = f[i] or ''
  end
  return reply
end

if lease then
  local reply = {0, redis.call('PTTL', KEYS[1])}
  local fields = redis.call('HGETALL', KEYS[3])
  for i = 1, #fields do reply[#reply + 1] = fields[i] end
  return with_head(reply)
end

if head and head ~= me then
  return with_head({0, math.max(1, tonumber(head_until) - now)})
end

-- A holder hash without a lease: the previous holder never released; its lease expired.
local previous = redis.call('HMGET', KEYS[3], 'owner', 'session', 'host', 'pid', 'token')
if previous[1] then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[10], '*',
    'event', 'expired', 'owner', previous[1], 'session', previous[2] or '', 'host', previous[3] or '',
    'pid', previous[4] or '', 'token', previous[5] or '', 'at', now)
end

local ttl = tonumber(ARGV[2])
local token
if tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(counter or '0') then
  token = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[2], token)
else
  token = string.format('%d', redis.call('INCR', KEYS[2]))
end
-- (issue 20) at least the client's proposal (ARGV[15]), written from its digits
if tonumber(floor) > tonumber(token) then
  token = floor
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'owner', ARGV[1], 'session', ARGV[3], 'host', ARGV[4],
  'pid', ARGV[5], 'pid_start', ARGV[6], 'pid_ns', ARGV[12], 'command', ARGV[7], 'acquired_ms', now,
  'ttl_ms', ttl, 'token', token, 'join', ARGV[14])
if me ~= '' then
  redis.call('ZREM', KEYS[4], me)
  redis.call('ZREM', KEYS[7], me)
  redis.call('HDEL', KEYS[8], me)
  redis.call('HDEL', KEYS[10], me)
end
-- (issue 21, `lock stats`: `wait_ms`, from the waiter's first ask (ARGV[13], its clock) to this
-- grant (the Redis clock), so a grant at the first attempt shows about one round trip; '' when
-- the request names no first ask (0: a slot's, src/slots).)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[10], '*',
  'event', 'grant', 'owner', ARGV[1], 'session', ARGV[3], 'host', ARGV[4], 'pid', ARGV[5], 'token', token,
  'at', now, 'wait_ms', (tonumber(ARGV[13]) or 0) > 0
    and math.max(0, now - math.floor(tonumber(ARGV[13]) / 1000)) or '')
return {1, tonumber(token)}
