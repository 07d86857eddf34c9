-- An account's usage events for days in [ARGV[1], ARGV[2]].
-- KEYS: the account's day index.  ARGV: first day, last day, prefix of day lists.
-- Returns the events of every day, in day order; days whose list expired are
-- dropped from the index.
local out = {}
for _, day in ipairs(redis.call('ZRANGE', KEYS[1], '[' .. ARGV[1], '[' .. ARGV[2], 'BYLEX')) do
  local events = redis.call('LRANGE', ARGV[3] .. day, 0, -1)
  if #events == 0 then
    redis.call('ZREM', KEYS[1], day)
  end
  for _, e in ipairs(events) do
    out[#out + 1] = e
  end
end
return out
