-- Rewrite the records of account ARGV[2] in log KEYS[1] to pseudonym ARGV[3]
-- (its account_id, and target where the target is the account); returns how
-- many. ARGV[1] is the JSON text `"account_id":"<id>"`, a cheap prefilter.
local needle, id, pseudonym = ARGV[1], ARGV[2], ARGV[3]
local n, first, size = 0, 0, redis.call('LLEN', KEYS[1])
while first < size do
  local page = redis.call('LRANGE', KEYS[1], first, first + 999)
  for i, raw in ipairs(page) do
    if string.find(raw, needle, 1, true) then
      local record = cjson.decode(raw)
      if record['account_id'] == id then
        record['account_id'] = pseudonym
        if record['target'] == id then
          record['target'] = pseudonym
        end
        redis.call('LSET', KEYS[1], first + i - 1, cjson.encode(record))
        n = n + 1
      end
    end
  end
  first = first + 1000
end
return n
