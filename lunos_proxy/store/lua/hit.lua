-- Check and charge GCRA limits and concurrency slots, and check bans: all or none.
-- KEYS: n counters, m slot sorted sets, then ban keys.
-- ARGV: n, m, lease, slot_retry, and one space-separated string of
--       limit window cost shadow per counter, then limit ttl shadow per slot
--       (one string: encoding dozens of arguments costs the client more than
--       the script costs Redis).
-- Returns {allowed, retry_after, banned, (remaining, reset, admitted) per counter,
-- (held, admitted) per slot}; fractions travel as strings because Redis
-- truncates Lua numbers to integers.
local now = clock()
local n, m, lease, slot_retry = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local spec = {}
for v in string.gmatch(ARGV[5], '%S+') do
  spec[#spec + 1] = v
end
local levels, fits, retry = {}, {}, 0
for i = 1, n do
  local a = 4 * (i - 1)
  local limit, window, cost = tonumber(spec[a + 1]), tonumber(spec[a + 2]), tonumber(spec[a + 3])
  levels[i] = drained(KEYS[i], limit, window, now)
  local w = wait(levels[i], cost, limit, window)
  fits[i] = w == 0
  if spec[a + 4] == '0' then
    retry = math.max(retry, w)
  end
end

local held = {}
for j = 1, m do
  local key, a = KEYS[n + j], 4 * n + 3 * (j - 1)
  -- a lease's score is its expiry: expired leases (a crashed instance's) go first
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  held[j] = redis.call('ZCARD', key)
  if spec[a + 3] == '0' and held[j] >= tonumber(spec[a + 1]) then
    retry = math.max(retry, slot_retry)
  end
end

local banned = 0
for i = n + m + 1, #KEYS do
  banned = math.max(banned, redis.call('PTTL', KEYS[i]) / 1000)
end

local allowed = retry == 0 and banned <= 0
local out = {0, string.format('%.17g', math.max(retry, banned)), string.format('%.17g', banned)}
if allowed then
  out[1], out[2] = 1, '0'
end
for i = 1, n do
  local a = 4 * (i - 1)
  local limit, window, cost = tonumber(spec[a + 1]), tonumber(spec[a + 2]), tonumber(spec[a + 3])
  local level = levels[i]
  if allowed and cost ~= 0 and fits[i] then
    level = level + cost
    store(KEYS[i], level, limit, window, now)
  end
  out[#out + 1] = remaining(level, limit)
  out[#out + 1] = string.format('%.17g', reset(level, limit, window))
  out[#out + 1] = fits[i] and 1 or 0
end
for j = 1, m do
  local key, a = KEYS[n + j], 4 * n + 3 * (j - 1)
  local limit, ttl = tonumber(spec[a + 1]), tonumber(spec[a + 2])
  local room = held[j] < limit
  if allowed and room then
    redis.call('ZADD', key, now + ttl, lease)
    -- the set itself outlives its longest lease by a little, never forever
    if redis.call('PTTL', key) < ttl * 1000 then
      redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000)
    end
  end
  out[#out + 1] = held[j]
  out[#out + 1] = room and 1 or 0
end
return out
