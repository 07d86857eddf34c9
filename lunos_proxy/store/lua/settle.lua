-- After a response: settle reservations and give back a concurrency lease.
-- KEYS: n counters, then slot sorted sets.
-- ARGV: n, lease, then limit, window, cost per counter.
local now = clock()
local n, lease = tonumber(ARGV[1]), ARGV[2]
for i = 1, n do
  local a = 3 * i
  local limit, window = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  store(KEYS[i], drained(KEYS[i], limit, window, now) + tonumber(ARGV[a + 2]), limit, window, now)
end
for i = n + 1, #KEYS do
  redis.call('ZREM', KEYS[i], lease)
end
