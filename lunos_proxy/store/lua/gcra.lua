-- GCRA helpers shared by hit.lua and adjust.lua (prepended to each when loaded).
-- Same sums as lunos_proxy/store/gcra.py: a counter is "level stamp", the
-- units in use at a time; limit/window units come back per second.
local EPSILON = 1e-9

local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function drained(key, limit, window, now)
  local value = redis.call('GET', key)
  if not value then
    return 0
  end
  local sep = string.find(value, ' ', 1, true)
  local level = tonumber(string.sub(value, 1, sep - 1))
  -- a clock that steps back (failover to another server) must not refill
  local elapsed = math.max(0, now - tonumber(string.sub(value, sep + 1)))
  return math.max(0, level - elapsed * limit / window)
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

local function store(key, level, limit, window, now)
  if level <= 0 then
    redis.call('DEL', key)
    return
  end
  -- expire when drained; %.17g because tostring() keeps only 14 digits
  local ttl = window
  if limit > 0 then
    ttl = level * window / limit
  end
  redis.call('SET', key, string.format('%.17g %.17g', level, now),
    'PX', math.ceil(ttl * 1000) + 1)
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
