-- An account record by email index.  KEYS: index entry.  ARGV: the directory's key prefix.
local id = redis.call('GET', KEYS[1])
if not id then
  return false
end
return redis.call('GET', ARGV[1] .. 'id:' .. id)
