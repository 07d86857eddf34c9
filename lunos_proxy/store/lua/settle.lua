-- After responses: settle reservations and give back concurrency leases,
-- for any number of requests of one tag at once (see settle() in gcra.lua).
-- KEYS: the tag's counter hash, then slot sorted sets.
-- ARGV: JSON arrays (decoded in C): field limit window cost per charge;
--       for each slot set, an array of the leases to give back.
settle(KEYS[1], KEYS, 2, #KEYS, cjson.decode(ARGV[1]), cjson.decode(ARGV[2]), clock())
