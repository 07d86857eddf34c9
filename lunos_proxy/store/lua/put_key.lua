-- Create or replace a key record; the hash index and account set follow.
-- KEYS: id entry, hash entry, account set.  ARGV: record JSON, key id, the
-- directory's key prefix (old entries are named from the stored record, and
-- share the directory's hash tag).
local dir, id = ARGV[3], ARGV[2]
local old = redis.call('GET', KEYS[1])
if old then
  local record = cjson.decode(old)
  local old_hash = dir .. 'hash:' .. record['hash']
  if old_hash ~= KEYS[2] then
    local entry = redis.call('GET', old_hash)
    if entry and cjson.decode(entry)['id'] == id then
      redis.call('DEL', old_hash)
    end
  end
  local old_set = dir .. 'account:' .. record['account_id']
  if old_set ~= KEYS[3] then
    redis.call('SREM', old_set, id)
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], id)
