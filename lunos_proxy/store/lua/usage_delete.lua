-- Erase an account's counters; returns the number of (day, key, model) rows.
-- KEYS: the account's day set.  ARGV: prefix of day hashes, fields per row.
local rows = 0
for _, day in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local hash = ARGV[1] .. day
  rows = rows + redis.call('HLEN', hash) / tonumber(ARGV[2])
  redis.call('DEL', hash)
end
redis.call('DEL', KEYS[1])
return rows
