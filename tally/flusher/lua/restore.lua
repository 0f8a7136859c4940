-- Put a run's in-flight marks back into dirty and drop its lease (a failed write).
--
-- ZADD LT adds a missing mark and lowers an existing one, so a mark keeps the
-- earliest first-dirty time (lag stays honest) when ingest re-marked it meanwhile.
-- KEYS: dirty, inflight, leases    ARGV: token
local marks = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #marks, 2000 do
  local args = {}
  for j = i, math.min(i + 1999, #marks), 2 do
    args[#args + 1] = marks[j + 1]
    args[#args + 1] = marks[j]
  end
  redis.call('ZADD', KEYS[1], 'LT', unpack(args))
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return #marks / 2
