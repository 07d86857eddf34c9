-- Every live spend counter of a subject.  KEYS: its set of periods.
-- ARGV: prefix of its counters (same hash tag).  Returns period, value pairs.
local out = {}
for _, period in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. period)
  if value then
    out[#out + 1] = period
    out[#out + 1] = value
  end
end
return out
