-- Append ledger lines.  KEYS: an account's ledger per group.
-- ARGV per key: number of lines, then the lines.
local a = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  redis.call('RPUSH', KEYS[i], unpack(ARGV, a + 1, a + n))
  a = a + n + 1
end
