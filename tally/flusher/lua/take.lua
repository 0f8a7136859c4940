-- Hand the oldest dirty marks of one shard and sink to one flusher run, atomically.
--
-- The marks move (scores kept) from the dirty set to this run's in-flight set,
-- and the run's token is leased until a deadline; nothing is ever dropped
-- here, so a crash at any point leaves every mark in dirty or in flight.
-- KEYS: dirty, inflight, leases    ARGV: limit, deadline, token
local taken = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #taken == 0 then return taken end
local args, members = {}, {}
for i = 1, #taken, 2 do
  args[#args + 1] = taken[i + 1]
  args[#args + 1] = taken[i]
  members[#members + 1] = taken[i]
end
for i = 1, #args, 1000 do
  redis.call('ZADD', KEYS[2], unpack(args, i, math.min(i + 999, #args)))
end
for i = 1, #members, 1000 do
  redis.call('ZREM', KEYS[1], unpack(members, i, math.min(i + 999, #members)))
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return taken
