-- Check and charge GCRA limits and concurrency slots, and check bans, for
-- one or more calls of one tag, in order: each call all or none, as if each
-- were a script of its own (the later ones see what the earlier ones took).
-- KEYS: the tag's counter hash; then per call its m slot sorted sets and b
--       ban keys; then the slot sets of the settlements carried.
-- ARGV: slot_retry; then JSON (decoded in C, where parsing text in Lua
--       would cost more than the rest of the script): what changes from
--       call to call, an array of h [lease, b, [cost per counter]]; then
--       per call what a kind of request always sends, [[field limit window
--       shadow per counter], [limit ttl shadow per slot]] (m slots), the
--       same text for the calls of a kind, decoded once;
--       then, optionally, settlements of this tag made before these calls,
--       applied first: the number k of slot sets they give leases back to,
--       and settle.lua's ARGV.
-- Returns an array of h verdicts packed by cmsgpack (store.base.Verdict,
-- whose structs are arrays on the wire): exact doubles, cheaper than
-- formatting text; a Lua table reply would truncate fractions.
local now = clock()
local slot_retry, calls = tonumber(ARGV[1]), cjson.decode(ARGV[2])
local h = #calls
local tail = 3 + h
if ARGV[tail] then
  local k = tonumber(ARGV[tail])
  settle(KEYS[1], KEYS, #KEYS - k + 1, #KEYS, cjson.decode(ARGV[tail + 1]),
         cjson.decode(ARGV[tail + 2]), now)
end

local decoded = {}
local function decode(text)
  local value = decoded[text]
  if value == nil then
    value = cjson.decode(text)
    decoded[text] = value
  end
  return value
end

-- Every counter the calls name, read once: level and stamp per field.
local fields, wanted = {}, {}
for c = 1, h do
  local spec = decode(ARGV[2 + c])[1]
  for i = 1, #spec, 4 do
    local field = spec[i]
    if not wanted[field] then
      wanted[field] = true
      fields[#fields + 1] = field
    end
  end
end
local levels, stamps = {}, {}
if #fields > 0 then
  local values = redis.call('HMGET', KEYS[1], unpack(fields))
  for i, field in ipairs(fields) do
    if values[i] then
      levels[field], stamps[field] = cmsgpack.unpack(values[i])
    end
  end
end
local function level_of(field, limit, window)
  local level = levels[field]
  if level == nil then
    return 0
  end
  return drain(level, stamps[field], limit, window, now)
end

local held, expiry, bans = {}, {}, {}
local changed, is_changed, lifetimes = {}, {}, {}
local verdicts = {}
local key_at = 2
for c = 1, h do
  local call, kind = calls[c], decode(ARGV[2 + c])
  local lease, b, costs = call[1], call[2], call[3]
  local spec, slot_spec = kind[1], kind[2]
  local m = #slot_spec / 3
  local first_slot, first_ban = key_at, key_at + m
  key_at = key_at + m + b
  local n = #costs

  local now_levels, fits, retry = {}, {}, 0
  for i = 1, n do
    local a = 4 * (i - 1)
    local limit, window = spec[a + 2], spec[a + 3]
    local level = level_of(spec[a + 1], limit, window)
    now_levels[i] = level
    local w = wait(level, costs[i], limit, window)
    fits[i] = w == 0
    if spec[a + 4] == 0 then
      retry = math.max(retry, w)
    end
  end

  local counts = {}
  for j = 1, m do
    local key, a = KEYS[first_slot + j - 1], 3 * (j - 1)
    local count = held[key]
    if count == nil then
      -- a lease's score is its expiry: only live leases count (a crashed
      -- instance's expire; settle() removes them)
      count = redis.call('ZCOUNT', key, '(' .. now, '+inf')
      held[key] = count
    end
    counts[j] = count
    if slot_spec[a + 3] == 0 and count >= slot_spec[a + 1] then
      retry = math.max(retry, slot_retry)
    end
  end

  local banned = 0
  for i = first_ban, first_ban + b - 1 do
    local key = KEYS[i]
    local left = bans[key]
    if left == nil then
      left = redis.call('PTTL', key) / 1000
      bans[key] = left
    end
    banned = math.max(banned, left)
  end

  local allowed = retry == 0 and banned <= 0
  local states = {}
  for i = 1, n do
    local a = 4 * (i - 1)
    local field, limit, window, cost = spec[a + 1], spec[a + 2], spec[a + 3], costs[i]
    local level = now_levels[i]
    if allowed and cost ~= 0 and fits[i] then
      level = level + cost
      levels[field], stamps[field] = level, now
      if not is_changed[field] then
        is_changed[field] = true
        changed[#changed + 1] = field
      end
      lifetimes[field] = lifetime(level, limit, window)
    end
    states[i] = {remaining(level, limit), reset(level, limit, window), fits[i]}
  end

  local slots_out = {}
  for j = 1, m do
    local key, a = KEYS[first_slot + j - 1], 3 * (j - 1)
    local limit, ttl = slot_spec[a + 1], slot_spec[a + 2]
    local room = counts[j] < limit
    if allowed and room then
      redis.call('ZADD', key, now + ttl, lease)
      held[key] = held[key] + 1
      expiry[key] = math.max(expiry[key] or 0, math.ceil(ttl * 1000) + 1000)
    end
    slots_out[j] = {counts[j], room}
  end

  local wait_for = 0
  if not allowed then
    wait_for = math.max(retry, banned)
  end
  verdicts[c] = {allowed, wait_for, states, banned, slots_out}
end

-- Write the charged counters once, at their last level.
local changes = {}
for _, field in ipairs(changed) do
  changes[#changes + 1] = {field, levels[field], lifetimes[field]}
end
write(KEYS[1], changes, now)
-- A slot's set outlives its newest lease by a little, never forever (and
-- never sooner than it would have: a lease may have a longer ttl).
for key, ms in pairs(expiry) do
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
return cmsgpack.pack(verdicts)
