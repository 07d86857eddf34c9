-- Append usage events.  KEYS: pairs of (an account's day index, its list for a day).
-- ARGV: retention in seconds, then per pair: day, number of events, the events.
local ttl = tonumber(ARGV[1])
local a = 2
for i = 1, #KEYS, 2 do
  local day, n = ARGV[a], tonumber(ARGV[a + 1])
  redis.call('ZADD', KEYS[i], 0, day)
  redis.call('EXPIRE', KEYS[i], ttl)
  redis.call('RPUSH', KEYS[i + 1], unpack(ARGV, a + 2, a + 1 + n))
  redis.call('EXPIRE', KEYS[i + 1], ttl)
  a = a + n + 2
end
