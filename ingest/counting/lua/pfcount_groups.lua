-- PFCOUNT of consecutive groups of KEYS, one count per group, in one call.
-- ARGV[g] is the size of group g. All keys share one cluster slot (the
-- caller's copies under one temporary tag, or one shard's HyperLogLogs):
-- redis-py refuses PFCOUNT in cluster pipelines, and one PFCOUNT per bucket
-- would cost a round trip each.
local counts, first = {}, 1
for g = 1, #ARGV do
  local n = tonumber(ARGV[g])
  counts[g] = n == 0 and 0 or redis.call('PFCOUNT', unpack(KEYS, first, first + n - 1))
  first = first + n
end
return counts
