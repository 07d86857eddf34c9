-- Prefix of a write that must apply once: the last key is the write's marker
-- (in the same hash tag as its other keys). A repeat of the same write (a retry
-- after a lost reply) finds the marker and changes nothing.
local marker = table.remove(KEYS)
if not redis.call('SET', marker, '1', 'NX', 'EX', 604800) then
  return 0
end
