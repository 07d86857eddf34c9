-- Push a held lease's expiry to ttl seconds from now in every slot; a lease
-- no longer held (expired, or given back) is not taken again.
-- KEYS: slot sorted sets.  ARGV: lease, then ttl per slot.
local now = clock()
for i = 1, #KEYS do
  local ttl = tonumber(ARGV[i + 1])
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + ttl, ARGV[1]) == 1 then
    if redis.call('PTTL', KEYS[i]) < ttl * 1000 then
      redis.call('PEXPIRE', KEYS[i], math.ceil(ttl * 1000) + 1000)
    end
  end
end
