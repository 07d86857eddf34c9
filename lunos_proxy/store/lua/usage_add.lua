-- Add usage counters.  KEYS: pairs of (an account's day set, its day hash).
-- ARGV per pair: day, number of fields, then field and increment for each.
local a = 1
for i = 1, #KEYS, 2 do
  local day, fields = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  redis.call('ZADD', KEYS[i], 0, day)
  for _ = 1, fields do
    redis.call('HINCRBY', KEYS[i + 1], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
end
