-- Spend counters.  KEYS: counters of one subject.  Returns their values (false if absent).
return redis.call('MGET', unpack(KEYS))
