-- Settle a reservation: charge ARGV[3] more units (negative refunds) to the
-- counter KEYS[1] of ARGV[1] units per ARGV[2] seconds; never fuller than full.
local now = clock()
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local level = drained(KEYS[1], limit, window, now) + tonumber(ARGV[3])
store(KEYS[1], level, limit, window, now)
