-- Set or increment a leaderboard member's score, then keep only the best N.
-- Scores are stored negated so that ascending order (ZRANGE, ZRANK) means
-- "score descending, then member ascending" for ties.
-- KEYS[1] board; ARGV: mode ("set" | "incr"), member, score, capacity (0 = unbounded)
-- Returns {stored score as a string, 0-based rank}, or {false, false} when
-- the member fell outside the kept N.
if ARGV[1] == 'set' then
  redis.call('ZADD', KEYS[1], -tonumber(ARGV[3]), ARGV[2])
else
  redis.call('ZINCRBY', KEYS[1], -tonumber(ARGV[3]), ARGV[2])
end
local capacity = tonumber(ARGV[4])
if capacity > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], capacity, -1) end
return {redis.call('ZSCORE', KEYS[1], ARGV[2]), redis.call('ZRANK', KEYS[1], ARGV[2])}
