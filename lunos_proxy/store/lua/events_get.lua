-- Usage events of an account.  KEYS: its list per day.  Returns one list per key.
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('LRANGE', KEYS[i], 0, -1)
end
return out
