-- Re-seed one counter shard's all-time totals and today's top keys after a
-- Redis loss: each key's count = the database's part + the shard's log tail.
--
-- KEYS: total hash, log stream, top:all sorted set, top:<today> sorted set.
-- ARGV: 1 the archiver's position in this stream ("ms-seq": entries up to it
--   are in the database's part), 2 today's date "YYYY-MM-DD" (UTC), 3 the
--   day sets' TTL, then per key: key, all-time count in the database, today's.
--
-- The tail is every log entry past the position: events counted but not yet
-- archived. The caller holds the archiver's lock, so no entry moves from the
-- tail into the database while the counts are read. The result is a SET, not
-- an increment: running it twice leaves the same totals.
local total, tail_today = {}, {}
local today = ARGV[2]

local function unescape(text)
  return (string.gsub(text, '\\\\', '\\'))
end

local function add_line(line)
  -- ts, counter, key, id, user, value, props, received (tab-separated COPY text)
  local fields, pos = {}, 1
  for _ = 1, 6 do
    local stop = string.find(line, '\t', pos, true)
    fields[#fields + 1] = string.sub(line, pos, (stop or 0) - 1)
    pos = (stop or #line) + 1
  end
  local key, value = unescape(fields[3]), tonumber(fields[6])
  total[key] = (total[key] or 0) + value
  if string.sub(fields[1], 1, 10) == today then
    tail_today[key] = (tail_today[key] or 0) + value
  end
end

for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+')) do
  local kv = entry[2]
  for i = 1, #kv, 2 do
    if kv[i] == 'e' then
      for line in string.gmatch(kv[i + 1], '[^\n]+') do add_line(line) end
    end
  end
end

local today_count = {}
for i = 4, #ARGV, 3 do
  local key = ARGV[i]
  total[key] = (total[key] or 0) + tonumber(ARGV[i + 1])
  today_count[key] = tonumber(ARGV[i + 2])
end
for key, count in pairs(tail_today) do today_count[key] = (today_count[key] or 0) + count end

local seeded = 0
for key, count in pairs(total) do
  redis.call('HSET', KEYS[1], key, count)
  redis.call('ZADD', KEYS[3], count, key)
  seeded = seeded + 1
end
local top = 0
for key, count in pairs(today_count) do
  if count > 0 then
    redis.call('ZADD', KEYS[4], count, key)
    top = top + 1
  end
end
if top > 0 then redis.call('EXPIRE', KEYS[4], tonumber(ARGV[3]), 'NX') end
return {seeded, top}
