-- Cool ARGV[1] down for ARGV[2] ms in the hash KEYS[1] (field -> until, ms on
-- the server clock), extending, never shortening; returns the ms left.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local till = now + tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current > till then
  till = current
else
  redis.call('HSET', KEYS[1], ARGV[1], till)
end
-- The hash lives as long as its longest cooldown.
if redis.call('PTTL', KEYS[1]) < till - now then
  redis.call('PEXPIRE', KEYS[1], till - now)
end
return till - now
