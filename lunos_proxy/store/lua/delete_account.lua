-- Delete an account record and its email index entry.
-- KEYS: id entry, set of all ids.  ARGV: account id, the directory's key prefix.
local id, dir = ARGV[1], ARGV[2]
local old = redis.call('GET', KEYS[1])
if not old then
  return 0
end
local index = cjson.decode(old)['email_index']
if type(index) == 'string' and index ~= '' then
  local entry = dir .. 'index:' .. index
  if redis.call('GET', entry) == id then
    redis.call('DEL', entry)
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], id)
return 1
