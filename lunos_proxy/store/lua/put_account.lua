-- Create or replace an account record; the email index follows.
-- KEYS: id entry, set of all ids.  ARGV: record JSON, account id, the
-- directory's key prefix, email index ('' for none), 1 to write only over
-- an existing record.  Returns 1 if written, 0 if not.
local id, dir, index = ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('GET', KEYS[1])
if not old and ARGV[5] == '1' then
  return 0
end
if old then
  local old_index = cjson.decode(old)['email_index']
  if type(old_index) == 'string' and old_index ~= '' and old_index ~= index then
    local entry = dir .. 'index:' .. old_index
    if redis.call('GET', entry) == id then
      redis.call('DEL', entry)
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], id)
if index ~= '' then
  redis.call('SET', dir .. 'index:' .. index, id)
end
return 1
