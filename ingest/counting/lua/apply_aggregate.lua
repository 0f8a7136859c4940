-- Batch step, part 4 of 7: aggregation (pure Lua). Accepted events are
-- summed per (resolution, index, key), so every hash, HyperLogLog, set and
-- sorted set is touched once.
-- Uses from apply_common: RESOLUTIONS; from apply_hash: hash_record,
-- hash_add, hash_add_many.

local floor = math.floor

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
local function new_state(tag, ttl)
  return {tag = tag, ttl = ttl, buckets = {m = {}, h = {}, d = {}}, hashes = {}, keys = {},
    total = hash_record(K.total(tag)), counter_users = {h = {}, d = {}},
    events = 0, value = 0, spread = {}}
end

local function bucket(state, res, index)
  local h = state.buckets[res][index]
  if not h then
    local tag = state.tag
    h = hash_record(K.bucket(tag, res, index), state.ttl[res])
    -- Number-to-string conversion is slow in Lua: keep it per bucket, not per key.
    -- Name prefixes of the bucket's cells: the key is appended.
    h.res, h.index, h.prefix = res, index, K.hll(tag, res, index, '')
    h.mark, h.viewers_prefix = K.dirty_member(index, ''), K.viewers(tag, index, '')
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
          cu = {res = res, index = index, name = K.counter_hll(state.tag, res, index)}
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
