-- Add to spend counters.  KEYS per counter: the counter, its subject's set
-- of periods (same hash tag).  ARGV per counter: increment, ttl (0: keep
-- forever), period.  The set lives as long as the subject's longest-lived
-- counter, so delete_spend finds every counter there is.
for i = 1, #KEYS / 2 do
  local counter, periods = KEYS[2 * i - 1], KEYS[2 * i]
  local ttl, period = tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  redis.call('INCRBY', counter, ARGV[3 * i - 2])
  if ttl > 0 then
    redis.call('EXPIRE', counter, ttl)
  else
    redis.call('PERSIST', counter)
  end
  local left = redis.call('TTL', periods) -- -2: no set yet, -1: kept forever
  redis.call('SADD', periods, period)
  if ttl == 0 then
    redis.call('PERSIST', periods)
  elseif left == -2 or (left >= 0 and left < ttl) then
    redis.call('EXPIRE', periods, ttl)
  end
end
