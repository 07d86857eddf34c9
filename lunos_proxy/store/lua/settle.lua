-- After a response: settle reservations and give back a concurrency lease.
-- KEYS: n counters, then slot sorted sets.
-- ARGV: n, lease, and one space-separated string of limit window cost per counter.
local now = clock()
local n, lease = tonumber(ARGV[1]), ARGV[2]
local spec = {}
for v in string.gmatch(ARGV[3], '%S+') do
  spec[#spec + 1] = tonumber(v)
end
for i = 1, n do
  local a = 3 * (i - 1)
  local limit, window = spec[a + 1], spec[a + 2]
  store(KEYS[i], drained(KEYS[i], limit, window, now) + spec[a + 3], limit, window, now)
end
for i = n + 1, #KEYS do
  redis.call('ZREM', KEYS[i], lease)
end
