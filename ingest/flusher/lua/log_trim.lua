-- Delete archived entries from a shard's log stream and take their events
-- off the shard's unarchived backlog, in one step.
-- KEYS: log stream, stats hash    ARGV: entry id, events, entry id, events, ...
-- Only entries still present count, so a second trim of the same entries
-- (the archiver killed after this ran, before it knew) changes nothing.
-- An empty stream holds no unarchived events, whatever the backlog says (an
-- entry deleted by hand): the backlog is set to 0 then, so a full log that
-- is no longer there cannot keep refusing batches.
local trimmed = 0
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then trimmed = trimmed + tonumber(ARGV[i + 1]) end
end
if redis.call('XLEN', KEYS[1]) == 0 then
  if redis.call('HEXISTS', KEYS[2], 'log_backlog') == 1 then
    redis.call('HSET', KEYS[2], 'log_backlog', 0)
  end
elseif trimmed > 0 then
  redis.call('HINCRBY', KEYS[2], 'log_backlog', -trimmed)
end
return trimmed
