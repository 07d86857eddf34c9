-- Check and charge GCRA limits and concurrency slots, and check bans: all or none.
-- KEYS: the tag's counter hash, m slot sorted sets, ban keys, then the slot
--       sets of the settlements carried (none when ARGV[6] is absent).
-- ARGV: lease, slot_retry, then JSON arrays (decoded in C, where parsing
--       text in Lua would cost more than the rest of the script):
--       field limit window shadow per counter, cost per counter, and
--       limit ttl shadow per slot; then, optionally, settlements of this
--       tag made before this call, applied first: the number k of slot
--       sets they give leases back to, and settle.lua's ARGV.
-- Returns the verdict packed by cmsgpack (store.base.Verdict, whose structs
-- are arrays on the wire): exact doubles, cheaper than formatting text,
-- decoded by the client in one call; a Lua table reply would truncate
-- fractions.
local now = clock()
local last = #KEYS  -- the last ban key
if ARGV[6] then
  last = last - tonumber(ARGV[6])
  settle(KEYS[1], KEYS, last + 1, #KEYS, ARGV, 7, now)
end
local lease, slot_retry = ARGV[1], tonumber(ARGV[2])
local spec, costs, slot_spec = cjson.decode(ARGV[3]), cjson.decode(ARGV[4]), cjson.decode(ARGV[5])
local n, m = #costs, #slot_spec / 3
local values = {}
if n > 0 then
  local fields = {}
  for i = 1, n do
    fields[i] = spec[4 * i - 3]
  end
  values = redis.call('HMGET', KEYS[1], unpack(fields))
end
local levels, fits, retry = {}, {}, 0
for i = 1, n do
  local a = 4 * (i - 1)
  local limit, window = spec[a + 2], spec[a + 3]
  levels[i] = drained(values[i], limit, window, now)
  local w = wait(levels[i], costs[i], limit, window)
  fits[i] = w == 0
  if spec[a + 4] == 0 then
    retry = math.max(retry, w)
  end
end

local held = {}
for j = 1, m do
  local key, a = KEYS[1 + j], 3 * (j - 1)
  -- a lease's score is its expiry: only live leases count (a crashed
  -- instance's expire; settle() removes them)
  held[j] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
  if slot_spec[a + 3] == 0 and held[j] >= slot_spec[a + 1] then
    retry = math.max(retry, slot_retry)
  end
end

local banned = 0
for i = m + 2, last do
  banned = math.max(banned, redis.call('PTTL', KEYS[i]) / 1000)
end

local allowed = retry == 0 and banned <= 0
local states, set, longest = {}, {}, 0
for i = 1, n do
  local a = 4 * (i - 1)
  local limit, window, cost = spec[a + 2], spec[a + 3], costs[i]
  local level = levels[i]
  local fit = fits[i]
  if allowed and cost ~= 0 and fit then
    level = level + cost
    set[#set + 1] = spec[a + 1]
    set[#set + 1] = cmsgpack.pack(level, now)
    longest = math.max(longest, lifetime(level, limit, window))
  end
  states[i] = {remaining(level, limit), reset(level, limit, window), fit}
end
if #set > 0 then
  redis.call('HSET', KEYS[1], unpack(set))
  local ms = math.ceil(longest * 1000) + 1
  if redis.call('PTTL', KEYS[1]) < ms then
    redis.call('PEXPIRE', KEYS[1], ms)
  end
end
local held_out = {}
for j = 1, m do
  local key, a = KEYS[1 + j], 3 * (j - 1)
  local limit, ttl = slot_spec[a + 1], slot_spec[a + 2]
  local room = held[j] < limit
  if allowed and room then
    redis.call('ZADD', key, now + ttl, lease)
    -- the set itself outlives its newest lease by a little, never forever
    redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000)
  end
  held_out[j] = {held[j], room}
end
local wait_for = 0
if not allowed then
  wait_for = math.max(retry, banned)
end
return cmsgpack.pack({allowed, wait_for, states, banned, held_out})
