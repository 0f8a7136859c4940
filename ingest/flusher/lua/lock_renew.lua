-- Extend the sink's flusher lock, compare-and-set: only the holder (same token) may.
-- KEYS: lock    ARGV: token, milliseconds    Returns 1 if extended, 0 if not ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
