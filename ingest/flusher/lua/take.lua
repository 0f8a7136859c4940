-- Hand the oldest dirty marks of one shard and sink to one flusher run, atomically.
--
-- The marks move (scores kept) from the dirty set to this run's in-flight set,
-- and the run's token is leased until a deadline; nothing is ever dropped
-- here, so a crash at any point leaves every mark in dirty or in flight. A run
-- takes several rounds under one token: ZADD LT keeps a mark's earliest
-- first-dirty time if it was re-marked and taken again, and every take
-- renews the run's lease (XX: only where it holds marks when none are left).
-- The reply is three strings rather than one element per mark (far cheaper
-- for the client to parse): the members concatenated, their byte lengths,
-- and their scores, both space-separated; {} when nothing is dirty.
-- KEYS: dirty, inflight, leases    ARGV: limit, deadline, token
local taken = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #taken == 0 then
  redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[3])
  return taken
end
local args, members, lengths, scores = {}, {}, {}, {}
for i = 1, #taken, 2 do
  args[#args + 1] = taken[i + 1]
  args[#args + 1] = taken[i]
  members[#members + 1] = taken[i]
  lengths[#lengths + 1] = #taken[i]
  scores[#scores + 1] = taken[i + 1]
end
for i = 1, #args, 1000 do
  redis.call('ZADD', KEYS[2], 'LT', unpack(args, i, math.min(i + 999, #args)))
end
for i = 1, #members, 1000 do
  redis.call('ZREM', KEYS[1], unpack(members, i, math.min(i + 999, #members)))
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return {table.concat(members), table.concat(lengths, ' '), table.concat(scores, ' ')}
