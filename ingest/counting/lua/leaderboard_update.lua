-- Set or increment a leaderboard member's score, then keep only the best N.
-- Scores are stored negated so that ascending order (ZRANGE, ZRANK) means
-- "score descending, then member ascending" for ties.
--
-- KEYS[1] board; KEYS[2] (optional) the record of an idempotency key.
-- ARGV: mode ("set" | "incr"), member, score, capacity (0 = unbounded),
--       and with KEYS[2]: request fingerprint, seconds to remember it.
-- Returns {stored score as a string, 0-based rank}, or {false, false} when
-- the member fell outside the kept N. With an idempotency key already
-- recorded for the same request, returns the recorded answer and changes
-- nothing; for another request, refuses (TALLY_IDEMPOTENCY).
--
-- Like apply.lua, no command that can fail runs after the first write: the
-- reads below check the board's and the record's types, and a score of
-- 2^53 or more in magnitude (where doubles skip integers) is refused first.
local board, record = KEYS[1], KEYS[2]
if record then
  local seen = redis.call('GET', record)
  if seen then
    local fingerprint, stored, rank = string.match(seen, '^([^\n]*)\n([^\n]*)\n([^\n]*)$')
    if fingerprint ~= ARGV[5] then
      return redis.error_reply('TALLY_IDEMPOTENCY this Idempotency-Key was used for another ' ..
        'request on this board')
    end
    if stored == '' then return {false, false} end
    return {stored, tonumber(rank)}
  end
end
local stored = -tonumber(ARGV[3])
local before = redis.call('ZSCORE', board, ARGV[2])
if ARGV[1] == 'incr' then stored = stored + (tonumber(before) or 0) end
if math.abs(stored) >= 9007199254740992 then
  return redis.error_reply('TALLY_SCORE_RANGE the resulting score must stay below 2^53 in magnitude')
end
-- The first write: nothing below can fail.
redis.call('ZADD', board, stored, ARGV[2])
local capacity = tonumber(ARGV[4])
if capacity > 0 then redis.call('ZREMRANGEBYRANK', board, capacity, -1) end
local answer = {redis.call('ZSCORE', board, ARGV[2]), redis.call('ZRANK', board, ARGV[2])}
if record then
  redis.call('SET', record, ARGV[5] .. '\n' .. (answer[1] or '') .. '\n' .. (answer[2] or ''),
    'EX', ARGV[6])
end
return answer
