-- Apply a batch of validated events atomically (Tally's batch step).
--
-- THE RULE: no command that can fail runs after the first write. Redis does
-- not roll back a script that stops part-way; it keeps what was written. So
-- the script has two phases, and every group of the batch is planned before
-- any group is written:
--
-- 1. Plan (plan_group): read every key the write phase will touch (but the
--    HyperLogLogs, see below). A read fails on a key of another type and,
--    on a cluster, on a key this node does not serve (slot migration), so
--    those errors come here. Decide
--    dedup, sum every field exactly (parts of at most 2^53 - 1), and refuse
--    the whole batch with an error reply if a count would pass LIMIT or a
--    stored value is not what a write needs. Nothing is written here, and
--    all Lua that can raise (tonumber on stored data, unpack) runs here.
-- 2. Write (write_group): only commands that cannot fail on keys the plan
--    checked: HSET, HINCRBY (checked to stay below 2^63), HINCRBYFLOAT,
--    SADD, BITFIELD SET, ZADD, ZREMRANGEBYRANK, EXPIRE, with arguments from
--    the plan or from replies of these commands (and HMGET of the
--    unique-view counts, whose type the plan checked). Under maxmemory Redis
--    refuses only a script's first write (OOM), so a batch refused for
--    memory changes nothing either.
--    Two writes may meet data they cannot use, and then skip it rather than
--    fail: PFADD validates a HyperLogLog's whole encoding, which no read can
--    check (and reading a dense one costs more than its share of the
--    batch), so it runs under pcall; a unique-view count (uvc:*) whose field
--    holds no number is left alone. Either way only that key is not updated,
--    the rest of the batch applies, and the reply names it (batch.py logs it).
--
-- A new write needs the read that checks its key in plan_group;
-- tests/test_counting_atomicity.py puts a key of every kind in the way.
--
-- Key names follow tally/keys.py; KEYS[1] is any key of the
-- (single) tag on a cluster and only routes the call.
--
-- ARGV: now, dedup_mode, window, bloom_bits, bloom_hashes, ttl_m, ttl_h, ttl_d,
--       ttl_viewers, top_capacity, sink_count, sinks..., registry, counter_count,
--       counters..., payload
-- registry, counters: on one Redis the script adds the batch's counters to
--   the counter registry set itself, so a refused batch does not register
--   them either (a cluster sends counter_count 0: the registry lives in
--   another slot, and batch.py writes it alongside).
-- payload (JSON, built by ingest/counting/plan.py): a list of tag groups
--   [tag, batch_duplicates, members, keys]
--   members: dedup members ("<id>\n<key>") of the group's events with an id,
--            distinct (repeats inside the batch are already counted in
--            batch_duplicates), in the order the runs below consume them
--   keys:    [[key, runs(, spread)], ...], each key once; spread (default 1)
--            is the number of shards a hot key is spread over. A run is the
--            events of the key with one ts and value: [ts, value, a, b, c,
--            users]: a events with id and user, b with id and no user, c
--            with neither; `users` holds the a users, then the users of the
--            run's events without an id.
-- Returns {applied, duplicates, keys (or "key field") that could not be updated}.

local now = tonumber(ARGV[1])
local dedup_mode, window = ARGV[2], tonumber(ARGV[3])
local bloom_bits, bloom_hashes = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = {m = tonumber(ARGV[6]), h = tonumber(ARGV[7]), d = tonumber(ARGV[8])}
local ttl_viewers, top_capacity = tonumber(ARGV[9]), tonumber(ARGV[10])
local sink_count = tonumber(ARGV[11])
local sinks = {}
for i = 1, sink_count do sinks[i] = ARGV[11 + i] end
local registry, counter_count = ARGV[12 + sink_count], tonumber(ARGV[13 + sink_count])
local counters = {}
for i = 1, counter_count do counters[i] = ARGV[13 + sink_count + i] end
local groups = cjson.decode(ARGV[14 + sink_count + counter_count])

local call, floor, min, find = redis.call, math.floor, math.min, string.find
local RESOLUTIONS = {{'m', 60}, {'h', 3600}, {'d', 86400}}
local RESOLUTION_NAMES = {m = 'minute', h = 'hour', d = 'day'}

-- Lua numbers are doubles: a sum is only exact up to 2^53 - 1. A field whose
-- sum may pass it is written with HINCRBY, exact in 64 bits, in parts that
-- are each exact.
local SAFE = 9007199254740991

-- Counts are 64-bit integers in Redis, PostgreSQL and InfluxDB. A batch is
-- refused when any field it writes would pass LIMIT (below 2^63 by far more
-- than a double's rounding error), a hot key's fields when they would pass
-- LIMIT / spread, so the sum of its shards stays below LIMIT too.
local LIMIT = 9.2e18

-- Refusals: the Python side maps the code word to its own error.
local OVERFLOW, STATE = 'TALLY_OVERFLOW', 'TALLY_STATE'
local function refuse(code, message) error({err = code .. ' ' .. message}) end

-- Variadic commands go out in chunks below Lua's unpack limit (a batch may
-- carry thousands of users for one key); integer replies are summed.
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

local function is_integer_text(text)
  return #text <= 20 and find(text, '^%-?%d+$') ~= nil
end

local function is_float_text(text)
  return find(text, '^%-?%d+%.?%d*$') ~= nil or find(text, '^%-?%d+%.?%d*[eE][-+]?%d+$') ~= nil
end

local function type_of(name)
  local reply = call('TYPE', name)
  return reply.ok or reply
end

-- Names (one name or a list) one of which holds a key of another type
-- (looked up only on refusal).
local function refuse_type(names, want)
  if type(names) == 'string' then names = {names} end
  for _, name in ipairs(names) do
    local kind = type_of(name)
    if kind ~= 'none' and kind ~= want then
      refuse(STATE, 'key ' .. name .. ' holds a ' .. kind .. ', not a ' .. want)
    end
  end
  refuse(STATE, 'a key among ' .. names[1] .. ', ... is not a ' .. want)
end

-- The reply of a plan-phase read, redis.pcall(...): a key of another type
-- than `want` is refused by name (`names`: the key or keys read); any other
-- error (a cluster slot in migration, say) is raised as Redis gave it.
-- (The reply, not the arguments, comes here: passing a thousand arguments
-- through a vararg function costs more than the call.)
local pcall_ = redis.pcall
local function read(reply, names, want)
  if type(reply) == 'table' and reply.err then
    if find(reply.err, '^WRONGTYPE') then refuse_type(names, want) end
    error(reply)
  end
  return reply
end

---------------------------------------------------------------------------
-- Hash records (buckets, totals, unique-view counts): read once (HMGET; in
-- the plan, but unique-view counts after SADD) and written once (HSET) per
-- batch instead of one HINCRBY per field.

local function hash_record(name, ttl_seconds)
  return {name = name, ttl = ttl_seconds, fields = {}, incs = {}, at = {}, parts = {}}
end

local function field_of(h, field)
  local pos = h.at[field]
  if not pos then
    pos = #h.fields + 1
    h.fields[pos], h.incs[pos], h.at[field] = field, 0, pos
  end
  return pos
end

-- Adds `value` (at most SAFE) to a field. An increment that would pass SAFE
-- starts a new part, so every part stays exact.
local function hash_add(h, field, value)
  local pos = field_of(h, field)
  local inc = h.incs[pos] + value
  if inc > SAFE then
    local parts = h.parts[pos]
    if not parts then
      parts = {}
      h.parts[pos] = parts
    end
    parts[#parts + 1] = h.incs[pos]
    inc = value
  end
  h.incs[pos] = inc
  return pos
end

-- `count` events of `value` each (their product may pass SAFE).
local function hash_add_many(h, field, value, count)
  if value * count <= SAFE then return hash_add(h, field, value * count) end
  local per, pos = floor(SAFE / value)
  while count > 0 do
    local n = min(count, per)
    pos = hash_add(h, field, value * n)
    count = count - n
  end
  return pos
end

-- Plan a record's write: h.values[pos] the value after the batch,
-- h.present[pos] whether the field had a value, h.existed whether any had
-- (then the hash has its TTL already), h.pairs the HSET arguments and h.big
-- the fields whose value may pass SAFE (written with HINCRBY, which needs a
-- stored integer). `limits[field]` (default LIMIT) bounds each value;
-- `describe(field)` names it in a refusal.
local function plan_hash(h, limits, describe)
  local fields, values, present, pairs_, big = h.fields, {}, {}, {}, {}
  for from = 1, #fields, CHUNK do
    local to = min(from + CHUNK - 1, #fields)
    local got = read(pcall_('HMGET', h.name, unpack(fields, from, to)), h.name, 'hash')
    for j = from, to do
      local before, sum, parts = got[j - from + 1], h.incs[j], h.parts[j]
      if parts then
        for _, part in ipairs(parts) do sum = sum + part end
      end
      if before then
        local n = tonumber(before)
        if not n then refuse(STATE, 'field ' .. fields[j] .. ' of ' .. h.name .. ' is not a count') end
        present[j], sum, h.existed = true, sum + n, true
      end
      if sum > (limits[fields[j]] or LIMIT) then refuse(OVERFLOW, describe(fields[j])) end
      if parts or sum > SAFE then
        if before and not is_integer_text(before) then
          refuse(STATE, 'field ' .. fields[j] .. ' of ' .. h.name .. ' is not an integer')
        end
        big[#big + 1] = j
      else
        pairs_[#pairs_ + 1] = fields[j]
        pairs_[#pairs_ + 1] = sum
      end
      values[j] = sum
    end
  end
  h.values, h.present, h.pairs, h.big = values, present, pairs_, big
end

local function hset_pairs(name, pairs_)
  for from = 1, #pairs_, 2 * CHUNK do
    call('HSET', name, unpack(pairs_, from, min(from + 2 * CHUNK - 1, #pairs_)))
  end
end

local function write_hash(h)
  for _, j in ipairs(h.big) do
    local field = h.fields[j]
    for _, part in ipairs(h.parts[j] or {}) do call('HINCRBY', h.name, field, part) end
    h.values[j] = call('HINCRBY', h.name, field, h.incs[j])
  end
  hset_pairs(h.name, h.pairs)
  if h.ttl and #h.fields > 0 and not h.existed then call('EXPIRE', h.name, h.ttl, 'NX') end
end

---------------------------------------------------------------------------
-- Dedup. Both modes rotate generations of window/2 seconds and look a member
-- up in the current generation and the two before it, so it is remembered
-- for at least `window` seconds (and at most 1.5 windows). The plan finds
-- the positions in `members` seen before; the write records the others.
local generation = floor(now / math.max(1, floor(window / 2)))

-- Exact: one set of members per shard and generation, three SMISMEMBER and
-- one SADD per batch.
local function exact_seen(tag, members)
  local seen = {}
  for gen = generation, generation - 2, -1 do
    for from = 1, #members, CHUNK do
      local name = tag .. 'ids:' .. gen
      local found = read(pcall_('SMISMEMBER', name,
        unpack(members, from, min(from + CHUNK - 1, #members))), name, 'set')
      for j = 1, #found do
        if found[j] == 1 then seen[from + j - 1] = true end
      end
    end
  end
  return seen
end

local function exact_record(tag, members, seen)
  local new = {}
  for j = 1, #members do
    if not seen[j] then new[#new + 1] = members[j] end
  end
  if #new > 0 then
    local current = tag .. 'ids:' .. generation
    variadic('SADD', current, new)
    call('EXPIRE', current, window * 2, 'NX')
  end
end

-- Bloom: a filter per shard and generation; bit positions of a member come
-- from its SHA-1 by double hashing. One BITFIELD reads many members' bits;
-- the current generation is read for every member, which also checks the
-- key's type and every offset the write will set.
local function bloom_positions(member)
  local digest = redis.sha1hex(member)
  local h1 = tonumber(string.sub(digest, 1, 8), 16)
  local h2 = tonumber(string.sub(digest, 9, 16), 16)
  local bits = {}
  for i = 0, bloom_hashes - 1 do bits[i + 1] = (h1 + i * h2) % bloom_bits end
  return bits
end

local function bloom_seen(tag, members, bits)
  local seen = {}
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
      local name = tag .. 'bloom:' .. gen
      local got = read(pcall_('BITFIELD', name, unpack(args)), name, 'string')
      for t = from, to do
        local base, all = (t - from) * bloom_hashes, true
        for i = 1, bloom_hashes do
          if got[base + i] == 0 then all = false; break end
        end
        if all then seen[todo[t]] = true end
      end
    end
  end
  return seen
end

local function bloom_record(tag, members, seen, bits)
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
end

---------------------------------------------------------------------------
-- Aggregation (pure Lua): accepted events summed per (resolution, index,
-- key), so every hash, HyperLogLog, set and sorted set is touched once.

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
    events = 0, value = 0, spread = {}}
end

local function bucket(state, res, index)
  local h = state.buckets[res][index]
  if not h then
    local name = state.tag .. res .. ':' .. index
    h = hash_record(name, ttl[res])
    -- Number-to-string conversion is slow in Lua: keep it per bucket, not per key.
    h.res, h.index, h.prefix = res, index, state.tag .. 'u:' .. res .. ':' .. index .. ':'
    h.mark, h.tag_uv = index .. ':', state.tag .. 'uv:' .. index .. ':'
    state.buckets[res][index] = h
    state.hashes[#state.hashes + 1] = h
  end
  return h
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
  -- The shard's value statistic is a float (HINCRBYFLOAT), as Prometheus reads it.
  state.value = state.value + value * count
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
          cu = {res = res, index = index, name = state.tag .. 'cu:' .. res .. ':' .. index}
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

local function aggregate(state, group, seen)
  local at, duplicates = 0, group[2]
  for _, entry in ipairs(group[4]) do
    local k = {key = entry[1], cells = {}, views = {}}
    if entry[3] and entry[3] > 1 then state.spread[k.key] = entry[3] end
    for _, run in ipairs(entry[2]) do
      local count, users, lost = accepted(run, seen, at)
      duplicates = duplicates + lost
      at = at + run[3] + run[4]
      if count > 0 then count_run(state, k, run[1], run[2], count, users) end
    end
    if #k.cells > 0 then state.keys[#state.keys + 1] = k end
  end
  state.duplicates = duplicates
end

---------------------------------------------------------------------------
-- Plan checks of the keys that are not hashes.

-- Of names that probably exist, which do: one EXISTS per chunk, and when
-- it counts them all, all of them (they need no EXPIRE); else none is known.
local function known_of(names)
  local count = 0
  for from = 1, #names, CHUNK do
    count = count + call('EXISTS', unpack(names, from, min(from + CHUNK - 1, #names)))
  end
  local known = {}
  if count == #names then
    for _, name in ipairs(names) do known[name] = true end
  end
  return known
end

-- Viewer sets: SINTERCARD checks the type of every key it is given before
-- it looks at members, and stops at once when one is missing; `absent` is a
-- name Tally never creates, so the call is only that check.
local function check_sets(names, absent)
  for from = 1, #names, CHUNK do
    local chunk = {}
    for j = from, min(from + CHUNK - 1, #names) do chunk[#chunk + 1] = names[j] end
    chunk[#chunk + 1] = absent
    read(pcall_('SINTERCARD', #chunk, unpack(chunk)), chunk, 'set')
  end
end

-- Stats fields must be numbers HINCRBY / HINCRBYFLOAT accept.
local function plan_stats(state)
  local name = state.tag .. 'stats'
  local got = read(pcall_('HMGET', name, 'events', 'duplicates', 'value'), name, 'hash')
  for i, field in ipairs({'events', 'duplicates'}) do
    local v = got[i]
    if v and not (is_integer_text(v) and tonumber(v) < LIMIT) then
      refuse(STATE, 'field ' .. field .. ' of ' .. name .. ' is not an integer count')
    end
  end
  if got[3] and not (is_float_text(got[3]) and tonumber(got[3]) < math.huge) then
    refuse(STATE, 'field value of ' .. name .. ' is not a number')
  end
end

local function describe_total(state)
  return function(key)
    local spread = state.spread[key]
    local text = 'the all-time total of key ' .. key ..
      ' would pass 9.2e18, the largest count Tally stores'
    if spread then text = text .. ' (a hot key over ' .. spread .. ' shards: 9.2e18 / ' ..
      spread .. ' per shard)' end
    return text
  end
end

-- Per-field limits: LIMIT, or LIMIT / spread for a hot key.
local function key_limits(state)
  local limits = {}
  for key, spread in pairs(state.spread) do limits[key] = LIMIT / spread end
  return limits
end


---------------------------------------------------------------------------
-- Plan phase of one group: reads and checks only.

local function plan_group(group)
  local state, members = new_state(group[1]), group[3]
  local tag = state.tag
  local seen, bits = {}, {}
  if #members > 0 then
    if dedup_mode == 'exact' then
      seen = exact_seen(tag, members)
    else
      seen = bloom_seen(tag, members, bits)
    end
  end
  state.members, state.seen, state.bits = members, seen, bits
  aggregate(state, group, seen)

  local limits, describe = key_limits(state), describe_total(state)
  plan_hash(state.total, limits, describe)
  for _, h in ipairs(state.hashes) do
    plan_hash(h, limits, function(key)
      return 'the count of key ' .. key .. ' in ' .. RESOLUTION_NAMES[h.res] .. ' ' .. h.index ..
        ' would pass 9.2e18, the largest count Tally stores'
    end)
  end

  -- Key HyperLogLogs and viewer sets whose bucket field existed almost always
  -- exist; known ones need no EXPIRE. Unique-view counts (uvc:<day>,
  -- uvc:all) are known only when SADD answers: here HLEN checks their type.
  local hll_likely, uv_names, uv_likely, uvc_names = {}, {}, {}, {tag .. 'uvc:all'}
  state.uvc, state.uvc_list, state.uvc_all = {}, {}, hash_record(tag .. 'uvc:all')
  for _, k in ipairs(state.keys) do
    for _, c in ipairs(k.cells) do
      if c.users then
        c.name = c.hash.prefix .. k.key
        if c.hash.present[c.pos] then hll_likely[#hll_likely + 1] = c.name end
      end
    end
    for _, v in ipairs(k.views) do
      v.name = v.cell.hash.tag_uv .. k.key
      uv_names[#uv_names + 1] = v.name
      if v.cell.hash.present[v.cell.pos] then uv_likely[#uv_likely + 1] = v.name end
      if not state.uvc[v.day] then
        local h = hash_record(tag .. 'uvc:' .. v.day, ttl.d)
        state.uvc[v.day] = h
        state.uvc_list[#state.uvc_list + 1] = h
        uvc_names[#uvc_names + 1] = h.name
      end
    end
  end
  for _, name in ipairs(uvc_names) do read(pcall_('HLEN', name), name, 'hash') end

  state.hll_known = known_of(hll_likely)
  check_sets(uv_names, tag .. 'absent')
  state.uv_known = known_of(uv_likely)

  -- Sorted sets: ZCARD checks the type, and its size decides the trim.
  state.dirty = {}
  for i, sink in ipairs(sinks) do
    state.dirty[i] = tag .. 'dirty:' .. sink
    read(pcall_('ZCARD', state.dirty[i]), state.dirty[i], 'zset')
  end
  state.tops, state.days, state.sizes = {}, {}, {}
  for _, h in ipairs(state.hashes) do
    if h.res == 'd' then
      state.days[#state.days + 1] = h.index
      state.tops[h.index] = {}
      local name = tag .. 'top:' .. h.index
      state.sizes[h.index] = read(pcall_('ZCARD', name), name, 'zset')
    end
  end
  state.sizes.all = read(pcall_('ZCARD', tag .. 'top:all'), tag .. 'top:all', 'zset')
  plan_stats(state)
  return state
end

---------------------------------------------------------------------------
-- Write phase of one group: no command here can fail (see the top).

-- Top sets take absolute counts and are trimmed once they pass twice their
-- capacity; `before` is the set's size before the batch (0: a new set,
-- which gets its TTL).
local function zadd_top(name, args, before, ttl_seconds)
  if #args == 0 then return end
  local size = before + variadic('ZADD', name, args)
  if size > 2 * top_capacity then call('ZREMRANGEBYRANK', name, 0, size - top_capacity - 1) end
  if ttl_seconds and before == 0 then call('EXPIRE', name, ttl_seconds, 'NX') end
end

-- PFADD under pcall (see the top): true when it changed the HyperLogLog;
-- a key it refused goes to `damaged`.
local function pfadd(name, users, damaged)
  local changed = false
  for from = 1, #users, CHUNK do
    local reply = pcall_('PFADD', name, unpack(users, from, min(from + CHUNK - 1, #users)))
    if type(reply) == 'table' then
      damaged[#damaged + 1] = name
      return false
    end
    changed = changed or reply == 1
  end
  return changed
end

local function write_key(state, k, dirty)
  for _, c in ipairs(k.cells) do
    local h = c.hash
    if c.users and pfadd(c.name, c.users, state.damaged) and not state.hll_known[c.name] then
      call('EXPIRE', c.name, ttl[h.res], 'NX')
    end
    if h.res == 'm' then
      dirty[#dirty + 1] = now
      dirty[#dirty + 1] = h.mark .. k.key
    elseif h.res == 'd' then
      -- Scores are the absolute day count, so trimming never loses accuracy.
      local top = state.tops[h.index]
      top[#top + 1] = h.values[c.pos]
      top[#top + 1] = k.key
    end
  end
  -- Unique views: one SADD per (key, day) says how many users are new that day.
  for _, v in ipairs(k.views) do
    local new = variadic('SADD', v.name, v.users)
    if new > 0 then
      if not state.uv_known[v.name] then
        -- Until the day's end plus the lateness, even if an event from a
        -- fast clock created the set before the day began.
        call('EXPIRE', v.name,
          math.max(ttl_viewers, (v.day + 1) * 86400 + ttl_viewers - 86400 - now), 'NX')
      end
      hash_add(state.uvc[v.day], k.key, new)
      hash_add(state.uvc_all, k.key, new)
    end
  end
end

-- Unique-view counts: the stored value plus the new viewers SADD reported
-- (far below 2^53: each one is a set member). The key's type was checked; a
-- field that holds no number is left as it is and reported, like PFADD's.
local function write_views(h, damaged)
  local fields, pairs_, existed = h.fields, {}, false
  for from = 1, #fields, CHUNK do
    local to = min(from + CHUNK - 1, #fields)
    local got = call('HMGET', h.name, unpack(fields, from, to))
    for j = from, to do
      local before = got[j - from + 1]  -- false when the field is missing
      local n = before and tonumber(before) or nil
      if before and not n then
        damaged[#damaged + 1] = h.name .. ' ' .. fields[j]
      else
        existed = existed or n ~= nil
        pairs_[#pairs_ + 1] = fields[j]
        pairs_[#pairs_ + 1] = (n or 0) + h.incs[j]
      end
    end
  end
  hset_pairs(h.name, pairs_)
  if h.ttl and #fields > 0 and not existed then call('EXPIRE', h.name, h.ttl, 'NX') end
end

local function write_group(state)
  local tag = state.tag
  if #state.members > 0 then
    if dedup_mode == 'exact' then
      exact_record(tag, state.members, state.seen)
    else
      bloom_record(tag, state.members, state.seen, state.bits)
    end
  end
  for _, h in ipairs(state.hashes) do write_hash(h) end
  write_hash(state.total)
  local dirty = {}
  for _, k in ipairs(state.keys) do write_key(state, k, dirty) end
  for _, h in ipairs(state.uvc_list) do write_views(h, state.damaged) end
  write_views(state.uvc_all, state.damaged)
  -- Score = when the mark was first set (NX), so the flusher can report its lag.
  if #dirty > 0 then
    for _, name in ipairs(state.dirty) do variadic('ZADD', name, dirty, 'NX') end
  end
  for _, day in ipairs(state.days) do
    zadd_top(tag .. 'top:' .. day, state.tops[day], state.sizes[day], ttl.d)
  end
  for _, cu in ipairs(state.counter_users) do
    if pfadd(cu.name, cu.users, state.damaged) then call('EXPIRE', cu.name, ttl[cu.res], 'NX') end
  end
  local top_all = {}
  for pos, key in ipairs(state.total.fields) do
    top_all[#top_all + 1] = state.total.values[pos]
    top_all[#top_all + 1] = key
  end
  zadd_top(tag .. 'top:all', top_all, state.sizes.all)
  local stats = tag .. 'stats'
  if state.events > 0 then call('HINCRBY', stats, 'events', state.events) end
  if state.duplicates > 0 then call('HINCRBY', stats, 'duplicates', state.duplicates) end
  if state.value > 0 then call('HINCRBYFLOAT', stats, 'value', state.value) end
end

local planned = {}
for i, group in ipairs(groups) do planned[i] = plan_group(group) end
if counter_count > 0 then read(pcall_('SCARD', registry), registry, 'set') end
-- The first write: everything below cannot fail.
local applied, duplicates, damaged = 0, 0, {}
for _, state in ipairs(planned) do
  state.damaged = damaged
  write_group(state)
  applied, duplicates = applied + state.events, duplicates + state.duplicates
end
if counter_count > 0 then call('SADD', registry, unpack(counters)) end
return {applied, duplicates, damaged}
