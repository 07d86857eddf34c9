-- Every field of KEYS[1] still cooling down, as field, ms left; ended ones go.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #flat, 2 do
  local left = tonumber(flat[i + 1]) - now
  if left > 0 then
    out[#out + 1] = flat[i]
    out[#out + 1] = left
  else
    redis.call('HDEL', KEYS[1], flat[i])
  end
end
return out
