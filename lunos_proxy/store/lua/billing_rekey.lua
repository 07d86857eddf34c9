-- Move every line of ledger KEYS[1] to the end of ledger KEYS[2]; returns how many.
local lines = redis.call('LRANGE', KEYS[1], 0, -1)
-- in slices: unpack() of a very long list overflows the Lua stack
for first = 1, #lines, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(lines, first, math.min(first + 999, #lines)))
end
redis.call('DEL', KEYS[1])
return #lines
