-- Raise the holder's fence above one a sink has already recorded (Redis lost
-- the lock hash: restarted empty, flushed), so its fences keep growing.
-- KEYS: lock    ARGV: owner, fence the sink holds
-- Returns the holder's new fence, or 0 if the lock is not ours.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
local fence = tonumber(redis.call('HGET', KEYS[1], 'fence'))
local floor = tonumber(ARGV[2])
if fence <= floor then
  fence = floor + 1
  redis.call('HSET', KEYS[1], 'fence', string.format('%d', fence))
end
return fence
