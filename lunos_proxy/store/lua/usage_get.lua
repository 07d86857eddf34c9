-- An account's counters for days in [ARGV[1], ARGV[2]].
-- KEYS: the account's day set.  ARGV: first day, last day, prefix of day hashes.
-- Returns {day, {field, value, ...}, day, ...}.
local out = {}
for _, day in ipairs(redis.call('ZRANGE', KEYS[1], '[' .. ARGV[1], '[' .. ARGV[2], 'BYLEX')) do
  out[#out + 1] = day
  out[#out + 1] = redis.call('HGETALL', ARGV[3] .. day)
end
return out
