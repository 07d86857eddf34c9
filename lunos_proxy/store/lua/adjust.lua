-- Settle a reservation: charge ARGV[4] more units (negative refunds) to the
-- counter ARGV[1] (a field of the hash KEYS[1]) of ARGV[2] units per ARGV[3]
-- seconds; never fuller than full.
local now = clock()
local field, limit, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local level = drained(redis.call('HGET', KEYS[1], field), limit, window, now) + tonumber(ARGV[4])
write(KEYS[1], {{field, level, lifetime(level, limit, window)}}, now)
