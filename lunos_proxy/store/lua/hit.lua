-- Check and charge GCRA limits and check bans: all charged or none.
-- KEYS: n counters, then ban keys.  ARGV: n, then limit, window, cost per counter.
-- Returns {allowed, retry_after, banned, remaining_1, reset_1, ...}; fractions
-- travel as strings because Redis truncates Lua numbers to integers.
local now = clock()
local n = tonumber(ARGV[1])
local levels, retry = {}, 0
for i = 1, n do
  local limit, window, cost = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  levels[i] = drained(KEYS[i], limit, window, now)
  retry = math.max(retry, wait(levels[i], cost, limit, window))
end

local banned = 0
for i = n + 1, #KEYS do
  banned = math.max(banned, redis.call('PTTL', KEYS[i]) / 1000)
end

local allowed = retry == 0 and banned <= 0
local out = {0, string.format('%.17g', math.max(retry, banned)), string.format('%.17g', banned)}
if allowed then
  out[1], out[2] = 1, '0'
end
for i = 1, n do
  local limit, window, cost = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  local level = levels[i]
  if allowed and cost ~= 0 then
    level = level + cost
    store(KEYS[i], level, limit, window, now)
  end
  out[2 * i + 2] = remaining(level, limit)
  out[2 * i + 3] = string.format('%.17g', reset(level, limit, window))
end
return out
