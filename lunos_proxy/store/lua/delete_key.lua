-- Delete a key record and its index entries.
-- KEYS: id entry.  ARGV: key id, the directory's key prefix.
local id, dir = ARGV[1], ARGV[2]
local old = redis.call('GET', KEYS[1])
if not old then
  return 0
end
local record = cjson.decode(old)
local hash = dir .. 'hash:' .. record['hash']
local entry = redis.call('GET', hash)
if entry and cjson.decode(entry)['id'] == id then
  redis.call('DEL', hash)
end
redis.call('SREM', dir .. 'account:' .. record['account_id'], id)
redis.call('DEL', KEYS[1])
return 1
