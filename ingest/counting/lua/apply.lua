-- Apply a batch of validated events atomically (Tally's batch step).
--
-- Dedup first, event by event (a repeat inside the batch is a duplicate too),
-- then aggregate the accepted events so every bucket, HyperLogLog and sorted
-- set is touched once per batch instead of once per event. Key names follow
-- ingest/counting/keys.py; KEYS[1] is any key of the (single) tag on a
-- cluster and only routes the call.
--
-- ARGV: now, dedup_mode, window, bloom_bits, bloom_hashes, ttl_m, ttl_h, ttl_d,
--       ttl_viewers, top_capacity, sink_count, sinks..., then per event:
--       tag, key, id, user, value, ts   ("" = no id / no user)

local now = tonumber(ARGV[1])
local dedup_mode, window = ARGV[2], tonumber(ARGV[3])
local bloom_bits, bloom_hashes = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = {m = tonumber(ARGV[6]), h = tonumber(ARGV[7]), d = tonumber(ARGV[8])}
local ttl_viewers, top_capacity = tonumber(ARGV[9]), tonumber(ARGV[10])
local sink_count = tonumber(ARGV[11])
local sinks = {}
for i = 1, sink_count do sinks[i] = ARGV[11 + i] end
local first_event = 12 + sink_count
local span = {m = 60, h = 3600, d = 86400}

local call = redis.call

local function is_duplicate_exact(tag, id)
  return not call('SET', tag .. 'id:' .. id, '1', 'NX', 'EX', window)
end

-- Two rotating Bloom filters of window/2 each: an id is remembered for at
-- least `window` seconds. Bit positions come from SHA-1 by double hashing.
local bloom_generation = math.floor(now / math.max(1, math.floor(window / 2)))
local function is_duplicate_bloom(tag, id)
  local digest = redis.sha1hex(id)
  local h1 = tonumber(string.sub(digest, 1, 8), 16)
  local h2 = tonumber(string.sub(digest, 9, 16), 16)
  local get, set = {}, {}
  for i = 0, bloom_hashes - 1 do
    local bit = (h1 + i * h2) % bloom_bits
    get[#get + 1] = 'GET'; get[#get + 1] = 'u1'; get[#get + 1] = bit
    set[#set + 1] = 'SET'; set[#set + 1] = 'u1'; set[#set + 1] = bit; set[#set + 1] = 1
  end
  for generation = bloom_generation, bloom_generation - 1, -1 do
    local bits = call('BITFIELD', tag .. 'bloom:' .. generation, unpack(get))
    local all = true
    for _, b in ipairs(bits) do if b == 0 then all = false break end end
    if all then return true end
  end
  local current = tag .. 'bloom:' .. bloom_generation
  call('BITFIELD', current, unpack(set))
  call('EXPIRE', current, window * 2, 'NX')
  return false
end

local is_duplicate = dedup_mode == 'bloom' and is_duplicate_bloom or is_duplicate_exact

-- Aggregates keyed by "<tag>\0<resolution>\0<index>\0<key>" (NUL never occurs in names).
local cells, order = {}, {}
local function cell(tag, res, index, key)
  local id = tag .. '\0' .. res .. '\0' .. index .. '\0' .. key
  local c = cells[id]
  if not c then
    c = {tag = tag, res = res, index = index, key = key, value = 0, users = {}}
    cells[id] = c
    order[#order + 1] = c
  end
  return c
end

local totals, total_order = {}, {}
local stats, stats_order = {}, {}
local applied, duplicates = 0, 0

for i = first_event, #ARGV, 6 do
  local tag, key, id, user = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local value, ts = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local s = stats[tag]
  if not s then s = {0, 0, 0}; stats[tag] = s; stats_order[#stats_order + 1] = tag end
  if id ~= '' and is_duplicate(tag, id) then
    duplicates = duplicates + 1
    s[2] = s[2] + 1
  else
    applied = applied + 1
    s[1] = s[1] + 1
    s[3] = s[3] + value
    local day = math.floor(ts / 86400)
    for res, seconds in pairs(span) do
      local c = cell(tag, res, math.floor(ts / seconds), key)
      c.value = c.value + value
      if user ~= '' then c.users[#c.users + 1] = user end
    end
    local tk = tag .. '\0' .. key
    local t = totals[tk]
    if not t then
      t = {tag = tag, key = key, value = 0, views = 0}
      totals[tk] = t
      total_order[#total_order + 1] = t
    end
    t.value = t.value + value
    if user ~= '' then
      local viewers = tag .. 'uv:' .. day .. ':' .. key
      if call('SADD', viewers, user) == 1 then
        call('EXPIRE', viewers, ttl_viewers, 'NX')
        call('HINCRBY', tag .. 'uvc:' .. day, key, 1)
        call('EXPIRE', tag .. 'uvc:' .. day, ttl.d, 'NX')
        t.views = t.views + 1
      end
    end
  end
end

local trimmed = {}
local function bounded_zadd(zset, score, key)
  call('ZADD', zset, score, key)
  if not trimmed[zset] then
    trimmed[zset] = true
    local size = call('ZCARD', zset)
    if size > 2 * top_capacity then call('ZREMRANGEBYRANK', zset, 0, size - top_capacity - 1) end
  end
end

local expired = {}
for _, c in ipairs(order) do
  local bucket = c.tag .. c.res .. ':' .. c.index
  local value = call('HINCRBY', bucket, c.key, c.value)
  if not expired[bucket] then
    expired[bucket] = true
    call('EXPIRE', bucket, ttl[c.res], 'NX')
  end
  if #c.users > 0 then
    local hll = c.tag .. 'u:' .. c.res .. ':' .. c.index .. ':' .. c.key
    call('PFADD', hll, unpack(c.users))
    call('EXPIRE', hll, ttl[c.res], 'NX')
  end
  if c.res == 'm' then
    for _, sink in ipairs(sinks) do
      -- Score = when the mark was first set, so the flusher can report its lag.
      call('ZADD', c.tag .. 'dirty:' .. sink, 'NX', now, c.index .. ':' .. c.key)
    end
  elseif c.res == 'd' then
    -- Scores are the absolute day count, so trimming never loses accuracy.
    local top = c.tag .. 'top:' .. c.index
    bounded_zadd(top, value, c.key)
    if not expired[top] then expired[top] = true; call('EXPIRE', top, ttl.d, 'NX') end
  end
end

for _, t in ipairs(total_order) do
  local value = call('HINCRBY', t.tag .. 'total', t.key, t.value)
  bounded_zadd(t.tag .. 'top:all', value, t.key)
  if t.views > 0 then call('HINCRBY', t.tag .. 'uvc:all', t.key, t.views) end
end

for _, tag in ipairs(stats_order) do
  local s = stats[tag]
  if s[1] > 0 then call('HINCRBY', tag .. 'stats', 'events', s[1]) end
  if s[2] > 0 then call('HINCRBY', tag .. 'stats', 'duplicates', s[2]) end
  if s[3] > 0 then call('HINCRBY', tag .. 'stats', 'value', s[3]) end
end

return {applied, duplicates}
