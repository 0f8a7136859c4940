-- Sliding-window rate limit, exact and atomic: trim, count, add, expire.
-- Time comes from the Redis server, so every caller shares one clock; the
-- member is time plus a per-key sequence number, so two requests in the same
-- microsecond are two entries (the textbook version loses one of them).
-- KEYS[1] window set, KEYS[2] its sequence counter (same slot); ARGV: max, window_ms
local max, window_us = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window_us)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < max then
  local seq = redis.call('HINCRBY', KEYS[2], 'n', 1)
  redis.call('ZADD', KEYS[1], now, now .. '-' .. seq)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  count = count + 1
  allowed = 1
end
-- Microseconds until the oldest entry leaves the window and frees a slot.
local reset_us = 0
if count >= max then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  reset_us = math.max(0, tonumber(oldest[2]) + window_us - now)
end
return {allowed, max - count, reset_us}
