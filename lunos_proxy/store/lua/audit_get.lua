-- The newest ARGV[2] records of the log KEYS[1], newest first; with a needle
-- ARGV[1] (the JSON text `"account_id":"<id>"`), only records containing it.
local needle, limit = ARGV[1], tonumber(ARGV[2])
if needle == '' then
  return redis.call('LRANGE', KEYS[1], 0, limit - 1)
end
local out, first, size = {}, 0, redis.call('LLEN', KEYS[1])
while first < size and #out < limit do
  local page = redis.call('LRANGE', KEYS[1], first, first + 999)
  for _, record in ipairs(page) do
    if string.find(record, needle, 1, true) then
      out[#out + 1] = record
      if #out >= limit then break end
    end
  end
  first = first + 1000
end
return out
