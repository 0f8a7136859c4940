-- Drop a run's in-flight marks and lease once every write of its sink succeeded.
-- KEYS: inflight, leases    ARGV: token
redis.call('DEL', KEYS[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
