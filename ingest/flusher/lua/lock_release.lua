-- Drop the sink's flusher lock, compare-and-set: only the holder (same owner) may.
-- The fence stays, so the next holder's is larger.
-- KEYS: lock    ARGV: owner    Returns 1 if dropped, 0 if not ours.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[1], 'owner', 'until')
return 1
