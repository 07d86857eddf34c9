-- Lift a ban: KEYS[1] the ban, KEYS[2] its offence count, KEYS[3] the tag's
-- counters hash, ARGV the counters to empty. Returns 1 if a ban was in force.
local lifted = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
if #ARGV > 0 then
  redis.call('HDEL', KEYS[3], unpack(ARGV))
end
return lifted
