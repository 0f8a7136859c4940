-- Drop the sink's flusher lock, compare-and-set: only the holder (same token) may.
-- KEYS: lock    ARGV: token    Returns 1 if dropped, 0 if not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
