-- Apply a batch of validated events atomically (Tally's batch step).
--
-- Dedup first (a repeat inside the batch is a duplicate too), then aggregate
-- the accepted events so every bucket, HyperLogLog, set and sorted set is
-- touched once per batch instead of once per event. Key names follow
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

local call = redis.call

-- Lua numbers are doubles: a sum is only exact up to 2^53 - 1. A sum that
-- would pass it is written out first (HINCRBY itself is exact in 64 bits).
local SAFE = 9007199254740991
local function add(record, value)
  if record.value + value > SAFE then
    call('HINCRBY', record.hash, record.field, record.value)
    record.value = 0
  end
  record.value = record.value + value
end

-- Write helpers: variadic commands go out in chunks that stay below Lua's
-- unpack limit (a batch may carry thousands of users for one key).
local CHUNK = 1000
local function variadic(command, name, args, option)
  local total = 0
  for from = 1, #args, CHUNK do
    local to = math.min(from + CHUNK - 1, #args)
    if option then
      total = total + call(command, name, option, unpack(args, from, to))
    else
      total = total + call(command, name, unpack(args, from, to))
    end
  end
  return total
end

-- Both dedup modes rotate generations of window/2 seconds and look an id up
-- in the current generation and the two before it, so an id is remembered
-- for at least `window` seconds (and at most 1.5 windows).
local generation = math.floor(now / math.max(1, math.floor(window / 2)))

-- Exact dedup: one set of ids per shard and generation. A batch costs three
-- SMISMEMBER and one SADD per shard instead of a key per id (fewer calls,
-- about half the memory). Returns the set of ARGV positions that repeat.
local function exact_duplicates()
  local groups, repeats = {}, {}
  for i = first_event, #ARGV, 6 do
    if ARGV[i + 2] ~= '' then
      local g = groups[ARGV[i]]
      if not g then
        g = {tag = ARGV[i], ids = {}, at = {}}
        groups[ARGV[i]] = g
        groups[#groups + 1] = g
      end
      g.ids[#g.ids + 1] = ARGV[i + 2]
      g.at[#g.at + 1] = i
    end
  end
  for _, g in ipairs(groups) do
    local seen, new = {}, {}
    for gen = generation, generation - 2, -1 do
      for from = 1, #g.ids, CHUNK do
        local to = math.min(from + CHUNK - 1, #g.ids)
        local found = call('SMISMEMBER', g.tag .. 'ids:' .. gen, unpack(g.ids, from, to))
        for j, hit in ipairs(found) do
          if hit == 1 then seen[g.ids[from + j - 1]] = true end
        end
      end
    end
    for j, id in ipairs(g.ids) do
      if seen[id] then repeats[g.at[j]] = true else seen[id] = true; new[#new + 1] = id end
    end
    if #new > 0 then
      local current = g.tag .. 'ids:' .. generation
      variadic('SADD', current, new)
      call('EXPIRE', current, window * 2, 'NX')
    end
  end
  return repeats
end

-- Bloom dedup: a filter per shard and generation; bit positions come from
-- SHA-1 by double hashing.
local bloom_generation = generation
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
  for generation = bloom_generation, bloom_generation - 2, -1 do
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

local repeats = dedup_mode == 'exact' and exact_duplicates() or {}
local function is_duplicate(i, tag, id)
  if dedup_mode == 'exact' then return repeats[i] == true end
  return is_duplicate_bloom(tag, id)
end

-- Aggregates, so each bucket, HyperLogLog, set and sorted set is written
-- once per batch. Each table maps an id to a record and also lists the
-- records in order (records carry the hash and field that `add` spills to).
local function remember(index, id, record)
  index[id] = record
  index[#index + 1] = record
  return record
end
local cells, counter_users, viewers, totals, stats = {}, {}, {}, {}, {}
local resolutions = {{'m', 60}, {'h', 3600}, {'d', 86400}}
local applied, duplicates = 0, 0

for i = first_event, #ARGV, 6 do
  local tag, key, id, user = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local value, ts = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local s = stats[tag] or remember(stats, tag,
    {tag = tag, events = 0, duplicates = 0, value = 0, hash = tag .. 'stats', field = 'value'})
  if id ~= '' and is_duplicate(i, tag, id) then
    duplicates = duplicates + 1
    s.duplicates = s.duplicates + 1
  else
    applied = applied + 1
    s.events = s.events + 1
    add(s, value)
    for _, r in ipairs(resolutions) do
      local res, index = r[1], math.floor(ts / r[2])
      local cid = tag .. res .. index .. '\0' .. key
      local c = cells[cid] or remember(cells, cid, {tag = tag, res = res, index = index,
        hash = tag .. res .. ':' .. index, field = key, value = 0, users = {}})
      add(c, value)
      if user ~= '' then
        c.users[#c.users + 1] = user
        if res ~= 'm' then
          -- Users of the whole counter shard per hour/day, for the exporter.
          local name = tag .. 'cu:' .. res .. ':' .. index
          local cu = counter_users[name] or remember(counter_users, name,
            {name = name, res = res, users = {}})
          cu.users[#cu.users + 1] = user
        end
      end
    end
    local tid = tag .. '\0' .. key
    local t = totals[tid] or remember(totals, tid,
      {tag = tag, hash = tag .. 'total', field = key, value = 0, views = 0})
    add(t, value)
    if user ~= '' then
      local day = math.floor(ts / 86400)
      local vid = tag .. day .. '\0' .. key
      local v = viewers[vid] or remember(viewers, vid,
        {tag = tag, day = day, key = key, total = t, users = {}})
      v.users[#v.users + 1] = user
    end
  end
end

-- Sorted-set writes gathered per set; dirty marks keep their first score (NX),
-- top sets take absolute counts and are trimmed, a day's expires.
local zsets = {}
local function zadd_later(name, score, member, dirty, ttl_seconds)
  local z = zsets[name] or remember(zsets, name,
    {name = name, dirty = dirty, ttl = ttl_seconds, args = {}})
  z.args[#z.args + 1] = score
  z.args[#z.args + 1] = member
end

local expired = {}
local function expire_once(name, seconds)
  if not expired[name] then expired[name] = true; call('EXPIRE', name, seconds, 'NX') end
end

for _, c in ipairs(cells) do
  local value = call('HINCRBY', c.hash, c.field, c.value)
  expire_once(c.hash, ttl[c.res])
  if #c.users > 0 then
    local hll = c.tag .. 'u:' .. c.res .. ':' .. c.index .. ':' .. c.field
    -- PFADD answers 0 only for an existing, unchanged HyperLogLog, which
    -- already has its TTL: a new one always answers 1 and gets it here.
    if variadic('PFADD', hll, c.users) > 0 then call('EXPIRE', hll, ttl[c.res], 'NX') end
  end
  if c.res == 'm' then
    for _, sink in ipairs(sinks) do
      -- Score = when the mark was first set (NX), so the flusher can report its lag.
      zadd_later(c.tag .. 'dirty:' .. sink, now, c.index .. ':' .. c.field, true)
    end
  elseif c.res == 'd' then
    -- Scores are the absolute day count, so trimming never loses accuracy.
    zadd_later(c.tag .. 'top:' .. c.index, value, c.field, false, ttl.d)
  end
end

for _, cu in ipairs(counter_users) do
  variadic('PFADD', cu.name, cu.users)
  call('EXPIRE', cu.name, ttl[cu.res], 'NX')
end

-- Unique views: one SADD per (key, day) says how many users are new today.
for _, v in ipairs(viewers) do
  local name = v.tag .. 'uv:' .. v.day .. ':' .. v.key
  local new = variadic('SADD', name, v.users)
  if new > 0 then
    -- Until the day's end plus the lateness, even if an event from a
    -- fast clock created the set before the day began.
    call('EXPIRE', name, math.max(ttl_viewers, (v.day + 1) * 86400 + ttl_viewers - 86400 - now), 'NX')
    call('HINCRBY', v.tag .. 'uvc:' .. v.day, v.key, new)
    expire_once(v.tag .. 'uvc:' .. v.day, ttl.d)
    v.total.views = v.total.views + new
  end
end

for _, t in ipairs(totals) do
  local value = call('HINCRBY', t.hash, t.field, t.value)
  zadd_later(t.tag .. 'top:all', value, t.field, false)
  if t.views > 0 then call('HINCRBY', t.tag .. 'uvc:all', t.field, t.views) end
end

for _, z in ipairs(zsets) do
  if z.dirty then
    variadic('ZADD', z.name, z.args, 'NX')
  else
    variadic('ZADD', z.name, z.args)
    local size = call('ZCARD', z.name)
    if size > 2 * top_capacity then call('ZREMRANGEBYRANK', z.name, 0, size - top_capacity - 1) end
    if z.ttl then expire_once(z.name, z.ttl) end
  end
end

for _, s in ipairs(stats) do
  if s.events > 0 then call('HINCRBY', s.hash, 'events', s.events) end
  if s.duplicates > 0 then call('HINCRBY', s.hash, 'duplicates', s.duplicates) end
  if s.value > 0 then call('HINCRBY', s.hash, 'value', s.value) end
end

return {applied, duplicates}
