-- An escalating ban: KEYS[1] the offence counter, KEYS[2] the ban.
-- ARGV: first, longest, memory (seconds). Returns the ban in seconds (a string).
local first, longest, memory = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(memory * 1000))
local seconds = math.min(longest, first * 2 ^ math.min(count - 1, 62))
local ms = math.ceil(seconds * 1000)
if ms > 0 and redis.call('PTTL', KEYS[2]) < ms then
  redis.call('SET', KEYS[2], '1', 'PX', ms)
end
return string.format('%.17g', seconds)
