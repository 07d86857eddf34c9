-- Erase an account's usage events. KEYS: the account's day index.
-- ARGV: prefix of its day lists (same hash tag). Returns how many events went.
local n = 0
for _, day in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local list = ARGV[1] .. day
  n = n + redis.call('LLEN', list)
  redis.call('DEL', list)
end
redis.call('DEL', KEYS[1])
return n
