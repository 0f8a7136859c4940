-- Score of the oldest mark of one shard and sink, dirty or in flight (false if none).
-- KEYS: dirty, leases    ARGV: inflight prefix (keys.py ShardKeys.inflight with an empty token)
local oldest = false
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then oldest = tonumber(first[2]) end
for _, token in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local head = redis.call('ZRANGE', ARGV[1] .. token, 0, 0, 'WITHSCORES')
  if #head > 0 and (not oldest or tonumber(head[2]) < oldest) then oldest = tonumber(head[2]) end
end
if not oldest then return false end
return string.format('%.17g', oldest)
