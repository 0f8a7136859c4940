-- Set or increment a leaderboard member's score, then keep only the best N.
-- Scores are stored negated so that ascending order (ZRANGE, ZRANK) means
-- "score descending, then member ascending" for ties.
-- KEYS[1] board; ARGV: mode ("set" | "incr"), member, score, capacity (0 = unbounded)
-- Returns {stored score as a string, 0-based rank}, or {false, false} when
-- the member fell outside the kept N. A score of 2^53 or more in magnitude
-- (where doubles skip integers) is refused before any write.
local stored = -tonumber(ARGV[3])
if ARGV[1] == 'incr' then
  stored = stored + (tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2])) or 0)
end
if math.abs(stored) >= 9007199254740992 then
  return redis.error_reply('TALLY_SCORE_RANGE the resulting score must stay below 2^53 in magnitude')
end
redis.call('ZADD', KEYS[1], stored, ARGV[2])
local capacity = tonumber(ARGV[4])
if capacity > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], capacity, -1) end
return {redis.call('ZSCORE', KEYS[1], ARGV[2]), redis.call('ZRANK', KEYS[1], ARGV[2])}
