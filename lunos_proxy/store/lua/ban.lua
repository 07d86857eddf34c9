-- Ban KEYS[1] for ARGV[1] milliseconds, extending and never shortening a ban.
local ms = tonumber(ARGV[1])
if ms > 0 and redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
