-- renew.lua: extend a lease, only while it is still ours.
--
-- KEYS[1] lease   string, value = owner id
-- ARGV[1] owner id
-- ARGV[2] ttl in ms
-- Reply: 1 renewed, 0 not ours (expired or taken): nothing changed
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
