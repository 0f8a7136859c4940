-- Extend the sink's flusher lock, compare-and-set: only the holder (same owner) may.
-- A holder whose lease ran out may still renew while nobody took the lock:
-- the fence is unchanged then, so no other writer can exist.
-- KEYS: lock    ARGV: owner, milliseconds    Returns 1 if extended, 0 if not ours.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', KEYS[1], 'until', string.format('%d', now + tonumber(ARGV[2])))
return 1
