-- Every account record.  KEYS: set of all ids.  ARGV: the directory's key prefix.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', ARGV[1] .. 'id:' .. id)
  if record then
    out[#out + 1] = record
  end
end
return out
