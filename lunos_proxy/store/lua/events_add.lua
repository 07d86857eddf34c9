-- Append usage events.  KEYS: an account's list per day.
-- ARGV: retention in seconds, then per key: number of events, then the events.
local ttl = tonumber(ARGV[1])
local a = 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  redis.call('RPUSH', KEYS[i], unpack(ARGV, a + 1, a + n))
  redis.call('EXPIRE', KEYS[i], ttl)
  a = a + n + 1
end
