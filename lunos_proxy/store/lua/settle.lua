-- After responses: settle reservations and give back concurrency leases,
-- for any number of requests of one tag at once (see settle() in gcra.lua).
-- KEYS: the tag's counter hash, then slot sorted sets.
-- ARGV: a JSON array of limit window cost per charge, the n charge fields,
--       then for each slot set a count c and c leases.
settle(KEYS[1], KEYS, 2, #KEYS, ARGV, 1, clock())
