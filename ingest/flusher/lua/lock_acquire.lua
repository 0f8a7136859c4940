-- Take a sink's flusher lock: a hash {owner, until (ms, Redis clock), fence}.
--
-- The hash never expires, so the fence survives every holder: each
-- acquisition increments it, and a sink that records the newest fence it saw
-- refuses writes carrying an older one (docs/flusher.md, "Takeover and fencing").
-- A holder whose `until` has passed has lost the lock to whoever asks next.
-- A plain string (a flusher of the version before fences) holds the lock
-- until its TTL ends.
-- KEYS: lock    ARGV: owner, milliseconds
-- Returns {1, fence} when taken, {0, milliseconds the holder's lease has left} when held.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then return {0, left} end
  redis.call('DEL', KEYS[1])
end
local held = redis.call('HMGET', KEYS[1], 'owner', 'until')
if held[1] and tonumber(held[2] or 0) > now then return {0, tonumber(held[2]) - now} end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'until', string.format('%d', now + tonumber(ARGV[2])))
return {1, fence}
