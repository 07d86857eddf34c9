-- GCRA helpers shared by the limit scripts (prepended to each when loaded).
-- Same sums as lunos_proxy/store/gcra.py: a counter is (level, stamp), the
-- units in use at a time; limit/window units come back per second. The
-- counters of one tag are the fields of one hash (one HMGET, one HSET).
local EPSILON = 1e-9

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- The level at `now` of a counter that held `level` at `stamp`.
local function drain(level, stamp, limit, window, now)
  -- a clock that steps back (failover to another server) must not refill
  local elapsed = math.max(0, now - stamp)
  return math.max(0, level - elapsed * limit / window)
end

-- The level at `now` of a counter stored as `value` (false: empty): the
-- level and its stamp, packed by cmsgpack (exact doubles, and cheaper for
-- Lua than formatting and parsing text).
local function drained(value, limit, window, now)
  if not value then
    return 0
  end
  local level, stamp = cmsgpack.unpack(value)
  return drain(level, stamp, limit, window, now)
end

local function wait(level, cost, limit, window)
  local excess = level + cost - limit
  if excess <= EPSILON * math.max(1, limit) then
    return 0
  end
  if limit == 0 then
    return window
  end
  return excess * window / limit
end

-- Seconds until a counter at `level` is empty again.
local function lifetime(level, limit, window)
  if limit > 0 then
    return level * window / limit
  end
  return window
end

-- Write counters into the hash `key`: `changes` holds {field, level,
-- lifetime}; an empty counter is removed. The hash expires when its
-- fullest counter is empty (never sooner than it would have).
local function write(key, changes, now)
  local set, del, longest = {}, {}, 0
  for _, c in ipairs(changes) do
    if c[2] <= 0 then
      del[#del + 1] = c[1]
    else
      set[#set + 1] = c[1]
      set[#set + 1] = cmsgpack.pack(c[2], now)
      longest = math.max(longest, c[3])
    end
  end
  if #del > 0 then
    redis.call('HDEL', key, unpack(del))
  end
  if #set > 0 then
    redis.call('HSET', key, unpack(set))
    local ms = math.ceil(longest * 1000) + 1
    if redis.call('PTTL', key) < ms then
      redis.call('PEXPIRE', key, ms)
    end
  end
end

local function remaining(level, limit)
  return math.max(0, math.floor(limit - level + EPSILON * math.max(1, limit)))
end

local function reset(level, limit, window)
  if limit > 0 then
    return level * window / limit
  end
  return 0
end

-- Settle reservations and give back leases (settle.lua; hit.lua runs it
-- first for the settlements it carries). `charges` holds field limit window
-- cost per charge; `leases` an array of leases for each slot set
-- keys[first..last]. Charges apply in order, a field as often as it comes,
-- just as separate calls would. Expired leases go too (hit.lua counts only
-- live ones).
local function settle(hash, keys, first, last, charges, leases, now)
  local n = #charges / 4
  if n > 0 then
    local fields = {}
    for i = 1, n do
      fields[i] = charges[4 * i - 3]
    end
    local values = redis.call('HMGET', hash, unpack(fields))
    local levels, order, windows = {}, {}, {}
    for i = 1, n do
      local a = 4 * (i - 1)
      local field, limit, window = charges[a + 1], charges[a + 2], charges[a + 3]
      local level = levels[field]
      if level == nil then
        order[#order + 1] = field
        level = drained(values[i], limit, window, now)
      end
      -- an empty counter is removed, so the next charge starts from 0
      levels[field] = math.max(0, level) + charges[a + 4]
      windows[field] = {limit, window}
    end
    local changes = {}
    for _, field in ipairs(order) do
      local level, lw = levels[field], windows[field]
      changes[#changes + 1] = {field, level, lifetime(level, lw[1], lw[2])}
    end
    write(hash, changes, now)
  end
  for i = first, last do
    redis.call('ZREM', keys[i], unpack(leases[i - first + 1]))
    -- and the leases that expired (a crashed instance's), which hit.lua
    -- does not count
    redis.call('ZREMRANGEBYSCORE', keys[i], '-inf', now)
  end
end
