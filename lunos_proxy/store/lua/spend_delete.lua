-- Erase a subject's spend counters.  KEYS: its set of periods.  ARGV: prefix
-- of its counters (same hash tag).  Returns how many live counters went.
local n = 0
for _, period in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. period)
end
redis.call('DEL', KEYS[1])
return n
