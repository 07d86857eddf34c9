-- Append an audit record (newest at the head) and drop the oldest past the cap.
-- KEYS: the log.  ARGV: record JSON, how many records to keep.
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
