-- Push a held lease's expiry to ttl seconds from now in every slot; a lease
-- no longer held (expired, or given back) is not taken again.
-- KEYS: slot sorted sets.  ARGV: lease, then ttl per slot.
local now = clock()
for i = 1, #KEYS do
  local ttl = tonumber(ARGV[i + 1])
  -- an expired lease stays in the set until a settlement sweeps it, but
  -- is no longer held: it must not come back
  local expires = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if expires and tonumber(expires) > now then
    redis.call('ZADD', KEYS[i], 'XX', now + ttl, ARGV[1])
    if redis.call('PTTL', KEYS[i]) < ttl * 1000 then
      redis.call('PEXPIRE', KEYS[i], math.ceil(ttl * 1000) + 1000)
    end
  end
end
