-- After responses: settle reservations and give back concurrency leases,
-- for any number of requests of one tag at once.
-- KEYS: the tag's counter hash, then slot sorted sets.
-- ARGV: a JSON array of limit window cost per charge, the n charge fields,
--       then for each slot set a count c and c leases.
-- Charges apply in order, a field as often as it comes, just as separate
-- calls would apply them.
local now = clock()
local spec = cjson.decode(ARGV[1])
local n = #spec / 3
if n > 0 then
  local values = redis.call('HMGET', KEYS[1], unpack(ARGV, 2, 1 + n))
  local levels, order, windows = {}, {}, {}
  for i = 1, n do
    local field, a = ARGV[1 + i], 3 * (i - 1)
    local limit, window = spec[a + 1], spec[a + 2]
    local level = levels[field]
    if level == nil then
      order[#order + 1] = field
      level = drained(values[i], limit, window, now)
    end
    -- an empty counter is removed, so the next charge starts from 0
    levels[field] = math.max(0, level) + spec[a + 3]
    windows[field] = {limit, window}
  end
  local changes = {}
  for _, field in ipairs(order) do
    local level, lw = levels[field], windows[field]
    changes[#changes + 1] = {field, level, lifetime(level, lw[1], lw[2])}
  end
  write(KEYS[1], changes, now)
end
local at = 2 + n
for i = 2, #KEYS do
  local count = tonumber(ARGV[at])
  redis.call('ZREM', KEYS[i], unpack(ARGV, at + 1, at + count))
  at = at + count + 1
end
