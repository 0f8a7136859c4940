-- Return in-flight marks to dirty: those of every expired lease (a killed or
-- stuck flusher), or those of one run's token (its write failed).
--
-- ZADD LT adds a missing mark and lowers an existing one, so a mark keeps the
-- earliest first-dirty time (lag stays honest) when ingest re-marked it meanwhile.
-- In-flight set names are built here from the prefix, inside the same hash
-- tag as KEYS, so this stays a single-slot call on a Redis Cluster.
-- KEYS: dirty, leases    ARGV: now, inflight prefix (keys.py ShardKeys.inflight with an empty token), [token]
local tokens = ARGV[3] and {ARGV[3]} or redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local moved = 0
for _, token in ipairs(tokens) do
  local inflight = ARGV[2] .. token
  local marks = redis.call('ZRANGE', inflight, 0, -1, 'WITHSCORES')
  for i = 1, #marks, 2000 do
    local args = {}
    for j = i, math.min(i + 1999, #marks), 2 do
      args[#args + 1] = marks[j + 1]
      args[#args + 1] = marks[j]
    end
    redis.call('ZADD', KEYS[1], 'LT', unpack(args))
  end
  moved = moved + #marks / 2
  redis.call('DEL', inflight)
  redis.call('ZREM', KEYS[2], token)
end
return moved
