-- Batch step, part 2 of 7: hash records (buckets, totals, unique-view
-- counts), read once (HMGET; in the plan, but unique-view counts after SADD)
-- and written once (HSET) per batch instead of one HINCRBY per field.
-- Uses from apply_common: SAFE, LIMIT, CHUNK, STATE, OVERFLOW, refuse, read,
-- is_integer_text.

local call, pcall_, floor, min = redis.call, redis.pcall, math.floor, math.min

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
