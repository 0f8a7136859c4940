-- Apply a batch of validated events atomically (Tally's batch step).
--
-- Per hash tag: dedup against earlier batches, aggregate the accepted events
-- so every hash, HyperLogLog, set and sorted set is touched once per batch,
-- then write. Key names follow ingest/counting/keys.py; KEYS[1] is any key
-- of the (single) tag on a cluster and only routes the call.
--
-- ARGV: now, dedup_mode, window, bloom_bits, bloom_hashes, ttl_m, ttl_h, ttl_d,
--       ttl_viewers, top_capacity, sink_count, sinks..., payload
-- payload (JSON, built by ingest/counting/plan.py): a list of tag groups
--   [tag, batch_duplicates, members, keys]
--   members: dedup members ("<id>\n<key>") of the group's events with an id,
--            distinct (repeats inside the batch are already counted in
--            batch_duplicates), in the order the runs below consume them
--   keys:    [[key, runs], ...], each key once; a run is the events of the key
--            with one ts and value: [ts, value, a, b, c, users]: a events with
--            id and user, b with id and no user, c with neither; `users` holds
--            the a users, then the users of the run's events without an id.

local now = tonumber(ARGV[1])
local dedup_mode, window = ARGV[2], tonumber(ARGV[3])
local bloom_bits, bloom_hashes = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = {m = tonumber(ARGV[6]), h = tonumber(ARGV[7]), d = tonumber(ARGV[8])}
local ttl_viewers, top_capacity = tonumber(ARGV[9]), tonumber(ARGV[10])
local sink_count = tonumber(ARGV[11])
local sinks = {}
for i = 1, sink_count do sinks[i] = ARGV[11 + i] end
local groups = cjson.decode(ARGV[12 + sink_count])

local call, floor, min = redis.call, math.floor, math.min
local RESOLUTIONS = {{'m', 60}, {'h', 3600}, {'d', 86400}}

-- Lua numbers are doubles: a sum is only exact up to 2^53 - 1. Sums that
-- would pass it go through HINCRBY, which is exact in 64 bits.
local SAFE = 9007199254740991

-- Variadic commands go out in chunks below Lua's unpack limit (a batch may
-- carry thousands of users for one key).
local CHUNK = 1000
local function variadic(command, name, args, option)
  local total = 0
  for from = 1, #args, CHUNK do
    local to = min(from + CHUNK - 1, #args)
    if option then
      total = total + call(command, name, option, unpack(args, from, to))
    else
      total = total + call(command, name, unpack(args, from, to))
    end
  end
  return total
end

-- Hashes (buckets, totals, unique-view counts) are read once (HMGET) and
-- written once (HSET) per batch instead of one HINCRBY per field: two calls
-- per hash. A record lists fields and increments; `add` spills an increment
-- that would pass SAFE with HINCRBY right away.
local function hash_record(name, ttl_seconds)
  return {name = name, ttl = ttl_seconds, fields = {}, incs = {}, at = {}}
end

local function hash_add(h, field, value)
  local pos = h.at[field]
  if not pos then
    pos = #h.fields + 1
    h.fields[pos], h.incs[pos], h.at[field] = field, 0, pos
  end
  if h.incs[pos] + value > SAFE then
    call('HINCRBY', h.name, field, h.incs[pos])
    h.incs[pos], h.spilled = 0, true
  end
  h.incs[pos] = h.incs[pos] + value
  return pos
end

-- `count` events of `value` each (their product may pass SAFE).
local function hash_add_many(h, field, value, count)
  if value * count <= SAFE then return hash_add(h, field, value * count) end
  local pos
  for _ = 1, count do pos = hash_add(h, field, value) end
  return pos
end

-- Writes a record; h.values[pos] is the absolute value after the write and
-- h.present[pos] says whether the field existed before. A
-- hash that had any field before (and was not just created by a spill)
-- already has its TTL, so only a possibly new hash is given one.
local function hash_write(h)
  local fields, incs, values, present, pairs_ = h.fields, h.incs, {}, {}, {}
  local existed = false
  for from = 1, #fields, CHUNK do
    local to = min(from + CHUNK - 1, #fields)
    local old = call('HMGET', h.name, unpack(fields, from, to))
    for j = from, to do
      local sum, before = incs[j], old[j - from + 1]
      if before then existed, present[j], sum = true, true, sum + tonumber(before) end
      if sum > SAFE then
        values[j] = call('HINCRBY', h.name, fields[j], incs[j])
      else
        values[j] = sum
        pairs_[#pairs_ + 1] = fields[j]
        pairs_[#pairs_ + 1] = sum
      end
    end
  end
  for from = 1, #pairs_, 2 * CHUNK do
    call('HSET', h.name, unpack(pairs_, from, min(from + 2 * CHUNK - 1, #pairs_)))
  end
  if h.ttl and #fields > 0 and (h.spilled or not existed) then
    call('EXPIRE', h.name, h.ttl, 'NX')
  end
  h.values, h.present = values, present
end

-- Both dedup modes rotate generations of window/2 seconds and look a member
-- up in the current generation and the two before it, so it is remembered
-- for at least `window` seconds (and at most 1.5 windows). Each returns the
-- set of positions in `members` seen before and records the others.
local generation = floor(now / math.max(1, floor(window / 2)))

-- Exact: one set of members per shard and generation, three SMISMEMBER and
-- one SADD per batch.
local function exact_seen(tag, members)
  local seen, new = {}, {}
  for gen = generation, generation - 2, -1 do
    for from = 1, #members, CHUNK do
      local found = call('SMISMEMBER', tag .. 'ids:' .. gen,
        unpack(members, from, min(from + CHUNK - 1, #members)))
      for j = 1, #found do
        if found[j] == 1 then seen[from + j - 1] = true end
      end
    end
  end
  for j = 1, #members do
    if not seen[j] then new[#new + 1] = members[j] end
  end
  if #new > 0 then
    local current = tag .. 'ids:' .. generation
    variadic('SADD', current, new)
    call('EXPIRE', current, window * 2, 'NX')
  end
  return seen
end

-- Bloom: a filter per shard and generation; bit positions of a member come
-- from its SHA-1 by double hashing. One BITFIELD reads many members' bits.
local function bloom_positions(member)
  local digest = redis.sha1hex(member)
  local h1 = tonumber(string.sub(digest, 1, 8), 16)
  local h2 = tonumber(string.sub(digest, 9, 16), 16)
  local bits = {}
  for i = 0, bloom_hashes - 1 do bits[i + 1] = (h1 + i * h2) % bloom_bits end
  return bits
end

local function bloom_seen(tag, members)
  local seen, bits = {}, {}
  local per_call = math.max(1, floor(6 * CHUNK / (3 * bloom_hashes)))
  for j = 1, #members do bits[j] = bloom_positions(members[j]) end
  for gen = generation, generation - 2, -1 do
    local todo = {}
    for j = 1, #members do
      if not seen[j] then todo[#todo + 1] = j end
    end
    for from = 1, #todo, per_call do
      local to, args = min(from + per_call - 1, #todo), {}
      for t = from, to do
        for _, bit in ipairs(bits[todo[t]]) do
          args[#args + 1] = 'GET'; args[#args + 1] = 'u1'; args[#args + 1] = bit
        end
      end
      local got = call('BITFIELD', tag .. 'bloom:' .. gen, unpack(args))
      for t = from, to do
        local base, all = (t - from) * bloom_hashes, true
        for i = 1, bloom_hashes do
          if got[base + i] == 0 then all = false; break end
        end
        if all then seen[todo[t]] = true end
      end
    end
  end
  local current, set = tag .. 'bloom:' .. generation, {}
  for j = 1, #members do
    if not seen[j] then
      for _, bit in ipairs(bits[j]) do
        set[#set + 1] = 'SET'; set[#set + 1] = 'u1'; set[#set + 1] = bit; set[#set + 1] = 1
      end
    end
  end
  for from = 1, #set, 4 * CHUNK do
    call('BITFIELD', current, unpack(set, from, min(from + 4 * CHUNK - 1, #set)))
  end
  if #set > 0 then call('EXPIRE', current, window * 2, 'NX') end
  return seen
end

-- User lists are shared between records until a second list joins them.
local function add_users(record, users)
  if not record.users then
    record.users, record.shared = users, true
    return
  end
  if record.shared then
    local copy = {}
    for i = 1, #record.users do copy[i] = record.users[i] end
    record.users, record.shared = copy, false
  end
  local list = record.users
  for i = 1, #users do list[#list + 1] = users[i] end
end

-- Accepted events of a run: (count, users, duplicates). `seen` marks
-- repeats of earlier batches among the group's members; `at` is the
-- position of the run's first member minus one.
local function accepted(run, seen, at)
  local a, b, c, users = run[3], run[4], run[5], run[6]
  local count, lost = b + c + #users, 0
  for j = at + 1, at + a + b do
    if seen[j] then lost = lost + 1 end
  end
  if lost == 0 then return count, users, 0 end
  local kept = {}
  for j = 1, #users do
    if j > a or not seen[at + j] then kept[#kept + 1] = users[j] end
  end
  return count - lost, kept, lost
end

-- The per-tag aggregates. A key record lists the key's cells (one per
-- bucket it touches) and views (one per UTC day with users).
local function new_state(tag)
  return {tag = tag, buckets = {m = {}, h = {}, d = {}}, hashes = {}, keys = {},
    total = hash_record(tag .. 'total'), counter_users = {h = {}, d = {}},
    events = 0, value = 0}
end

local function bucket(state, res, index)
  local h = state.buckets[res][index]
  if not h then
    local name = state.tag .. res .. ':' .. index
    h = hash_record(name, ttl[res])
    -- Number-to-string conversion is slow in Lua: keep it per bucket, not per key.
    h.res, h.index, h.prefix = res, index, state.tag .. 'u:' .. res .. ':' .. index .. ':'
    h.mark = index .. ':'
    state.buckets[res][index] = h
    state.hashes[#state.hashes + 1] = h
  end
  return h
end

-- The shard's value statistic is a float (HINCRBYFLOAT), as Prometheus reads it.
local function add_value(state, value)
  state.value = state.value + value
end

local function cell_of(k, h, pos)
  for _, c in ipairs(k.cells) do
    if c.hash == h then return c end
  end
  local c = {hash = h, pos = pos}
  k.cells[#k.cells + 1] = c
  return c
end

local function view_of(k, day, cell)
  for _, v in ipairs(k.views) do
    if v.day == day then return v end
  end
  local v = {day = day, cell = cell}
  k.views[#k.views + 1] = v
  return v
end

local function count_run(state, k, ts, value, count, users)
  state.events = state.events + count
  if value * count <= SAFE then
    add_value(state, value * count)
  else
    for _ = 1, count do add_value(state, value) end
  end
  local cell
  for _, spec in ipairs(RESOLUTIONS) do
    local res, index = spec[1], floor(ts / spec[2])
    local h = bucket(state, res, index)
    cell = cell_of(k, h, hash_add_many(h, k.key, value, count))
    if #users > 0 then
      add_users(cell, users)
      if res ~= 'm' then
        -- Users of the whole counter shard per hour/day, for the exporter.
        local cu = state.counter_users[res][index]
        if not cu then
          cu = {res = res, index = index}
          state.counter_users[res][index] = cu
          state.counter_users[#state.counter_users + 1] = cu
        end
        add_users(cu, users)
      end
    end
  end
  hash_add_many(state.total, k.key, value, count)
  if #users > 0 then add_users(view_of(k, floor(ts / 86400), cell), users) end
end

-- Dedup, then aggregate a group; returns (state, duplicates).
local function aggregate(group)
  local state, members = new_state(group[1]), group[3]
  local seen = {}
  if #members > 0 then
    seen = (dedup_mode == 'exact' and exact_seen or bloom_seen)(state.tag, members)
  end
  local at, duplicates = 0, group[2]
  for _, entry in ipairs(group[4]) do
    local k = {key = entry[1], cells = {}, views = {}}
    for _, run in ipairs(entry[2]) do
      local count, users, lost = accepted(run, seen, at)
      duplicates = duplicates + lost
      at = at + run[3] + run[4]
      if count > 0 then count_run(state, k, run[1], run[2], count, users) end
    end
    if #k.cells > 0 then state.keys[#state.keys + 1] = k end
  end
  return state, duplicates
end

-- Sorted sets: dirty marks keep their first score (NX); top sets take
-- absolute counts and are trimmed once they pass twice their capacity.
local function zadd_top(name, args, ttl_seconds)
  local added = variadic('ZADD', name, args)
  local size = call('ZCARD', name)
  if size > 2 * top_capacity then call('ZREMRANGEBYRANK', name, 0, size - top_capacity - 1) end
  -- A set that existed already has its TTL; a new one adds every member.
  if ttl_seconds and added * 2 == #args then call('EXPIRE', name, ttl_seconds, 'NX') end
end

-- HyperLogLogs and viewer sets always get their TTL when created (in this
-- script), so one that exists needs no EXPIRE. Where the key's bucket field
-- existed before this batch they probably exist: one EXISTS over those
-- names replaces up to four EXPIREs; if any is missing, all get EXPIRE NX.
local function probe(k)
  local names = {}
  for _, c in ipairs(k.cells) do
    if c.users then
      c.name = c.hash.prefix .. k.key
      if c.hash.present[c.pos] then names[#names + 1] = c.name end
    end
  end
  for _, v in ipairs(k.views) do
    if v.cell.hash.present[v.cell.pos] then
      v.name = v.cell.hash.tag_uv .. k.key
      names[#names + 1] = v.name
    end
  end
  return #names >= 2 and call('EXISTS', unpack(names)) == #names and names or {}
end

local function write_key(state, k, out)
  local known = {}
  for _, name in ipairs(probe(k)) do known[name] = true end
  for _, c in ipairs(k.cells) do
    local h = c.hash
    if c.users and variadic('PFADD', c.name, c.users) > 0 and not known[c.name] then
      call('EXPIRE', c.name, ttl[h.res], 'NX')
    end
    if h.res == 'm' then
      out.dirty[#out.dirty + 1] = now
      out.dirty[#out.dirty + 1] = h.mark .. k.key
    elseif h.res == 'd' then
      local top = out.tops[h.index]
      if not top then
        top = {}
        out.tops[h.index] = top
        out.days[#out.days + 1] = h.index
      end
      -- Scores are the absolute day count, so trimming never loses accuracy.
      top[#top + 1] = h.values[c.pos]
      top[#top + 1] = k.key
    end
  end
  -- Unique views: one SADD per (key, day) says how many users are new that day.
  for _, v in ipairs(k.views) do
    local name = v.name or state.tag .. 'uv:' .. v.day .. ':' .. k.key
    local new = variadic('SADD', name, v.users)
    if new > 0 then
      if not known[name] then
        -- Until the day's end plus the lateness, even if an event from a
        -- fast clock created the set before the day began.
        call('EXPIRE', name,
          math.max(ttl_viewers, (v.day + 1) * 86400 + ttl_viewers - 86400 - now), 'NX')
      end
      local h = out.uvc[v.day]
      if not h then
        h = hash_record(state.tag .. 'uvc:' .. v.day, ttl.d)
        out.uvc[v.day] = h
        out.uvc_list[#out.uvc_list + 1] = h
      end
      hash_add(h, k.key, new)
      hash_add(out.uvc_all, k.key, new)
    end
  end
end

local function write(state, duplicates)
  local tag = state.tag
  for _, h in ipairs(state.hashes) do
    hash_write(h)
    h.tag_uv = tag .. 'uv:' .. h.index .. ':'
  end
  hash_write(state.total)
  local out = {dirty = {}, tops = {}, days = {}, uvc = {}, uvc_list = {},
    uvc_all = hash_record(tag .. 'uvc:all')}
  for _, k in ipairs(state.keys) do write_key(state, k, out) end
  for _, h in ipairs(out.uvc_list) do hash_write(h) end
  hash_write(out.uvc_all)
  for _, sink in ipairs(sinks) do
    -- Score = when the mark was first set (NX), so the flusher can report its lag.
    if #out.dirty > 0 then variadic('ZADD', tag .. 'dirty:' .. sink, out.dirty, 'NX') end
  end
  for _, day in ipairs(out.days) do zadd_top(tag .. 'top:' .. day, out.tops[day], ttl.d) end
  for _, cu in ipairs(state.counter_users) do
    local name = tag .. 'cu:' .. cu.res .. ':' .. cu.index
    if variadic('PFADD', name, cu.users) > 0 then call('EXPIRE', name, ttl[cu.res], 'NX') end
  end
  local top_all = {}
  for pos, key in ipairs(state.total.fields) do
    top_all[#top_all + 1] = state.total.values[pos]
    top_all[#top_all + 1] = key
  end
  if #top_all > 0 then zadd_top(tag .. 'top:all', top_all) end
  local stats = tag .. 'stats'
  if state.events > 0 then call('HINCRBY', stats, 'events', state.events) end
  if duplicates > 0 then call('HINCRBY', stats, 'duplicates', duplicates) end
  if state.value > 0 then call('HINCRBYFLOAT', stats, 'value', state.value) end
end

-- Counts are 64-bit integers in Redis, PostgreSQL and InfluxDB. Every bucket
-- of a key is at most the key's all-time total, so a batch is refused, before
-- its first write, when it could carry any total past LIMIT (duplicates
-- counted too: an upper bound). A refused batch changes nothing. The shard's
-- value statistic bounds every key total in it, so one HGET per tag settles
-- the check on the hot path; key totals are read only near the limit.
local LIMIT = 9.2e18  -- below 2^63 by far more than a double's rounding error
local function overflowing_key()
  for _, group in ipairs(groups) do
    local names, sums, group_sum = {}, {}, 0
    for _, entry in ipairs(group[4]) do
      local sum = 0
      for _, run in ipairs(entry[2]) do sum = sum + run[2] * (run[3] + run[4] + run[5]) end
      names[#names + 1], sums[#sums + 1], group_sum = entry[1], sum, group_sum + sum
    end
    local shard_value = tonumber(call('HGET', group[1] .. 'stats', 'value')) or 0
    if shard_value + group_sum > LIMIT then
      for from = 1, #names, CHUNK do
        local to = min(from + CHUNK - 1, #names)
        local totals = call('HMGET', group[1] .. 'total', unpack(names, from, to))
        for j = from, to do
          if (tonumber(totals[j - from + 1]) or 0) + sums[j] > LIMIT then return names[j] end
        end
      end
    end
  end
end

local too_big = overflowing_key()
if too_big then
  return redis.error_reply('TALLY_OVERFLOW the all-time total of key ' .. too_big ..
    ' would pass 9.2e18, the largest count Tally stores')
end

local applied, duplicates = 0, 0
for _, group in ipairs(groups) do
  local state, group_duplicates = aggregate(group)
  write(state, group_duplicates)
  applied, duplicates = applied + state.events, duplicates + group_duplicates
end
return {applied, duplicates}
