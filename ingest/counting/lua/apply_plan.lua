-- Batch step, part 5 of 7: the plan phase of one group, reads and checks
-- only (see apply.lua for THE RULE).
-- Uses from apply_common: CHUNK, LIMIT, STATE, RESOLUTION_NAMES, refuse,
-- read, is_integer_text, is_float_text; from apply_hash: hash_record,
-- plan_hash; from apply_dedup: exact_seen, bloom_seen; from
-- apply_aggregate: new_state, aggregate.

local call, pcall_, min = redis.call, redis.pcall, math.min

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

-- Stats fields must be numbers HINCRBY / HINCRBYFLOAT accept; returns the
-- events the shard's log holds unarchived (field log_backlog).
local function plan_stats(state)
  local name = K.stats(state.tag)
  local got = read(pcall_('HMGET', name, 'events', 'duplicates', 'value', 'log_backlog'),
    name, 'hash')
  for _, at in ipairs({{1, 'events'}, {2, 'duplicates'}, {4, 'log_backlog'}}) do
    local v, field = got[at[1]], at[2]
    if v and not (is_integer_text(v) and tonumber(v) < LIMIT) then
      refuse(STATE, 'field ' .. field .. ' of ' .. name .. ' is not an integer count')
    end
  end
  if got[3] and not (is_float_text(got[3]) and tonumber(got[3]) < math.huge) then
    refuse(STATE, 'field value of ' .. name .. ' is not a number')
  end
  return tonumber(got[4] or 0)
end

-- The group's log entry: the lines of its accepted events (see apply.lua:
-- the members' lines, sliced by their lengths in payload item 5, and the
-- others'), or nil when the log is off or nothing was accepted.
-- Refused when the shard's log already holds cfg.log_max unarchived events.
local function plan_log(state, group, backlog, cfg)
  if cfg.log_max == 0 or state.events == 0 then return nil end
  local name = K.log(state.tag)
  read(pcall_('XLEN', name), name, 'stream')
  if backlog >= cfg.log_max then
    refuse(LOG_FULL, 'the event log of ' .. state.tag .. ' holds ' .. backlog ..
      ' events not yet archived to TimescaleDB (TALLY_EVENT_LOG_MAX is ' .. cfg.log_max .. ')')
  end
  local seen, member_lines = state.seen, group.member_lines
  if next(seen) == nil then  -- no member seen before: every line stays
    return {name = name, text = member_lines .. group.other_lines}
  end
  local text, from = {}, 1
  for j, length in ipairs(group[5]) do
    if not seen[j] then text[#text + 1] = string.sub(member_lines, from, from + length - 1) end
    from = from + length
  end
  text[#text + 1] = group.other_lines
  return {name = name, text = table.concat(text)}
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

local function plan_group(group, cfg)
  local state, members = new_state(group[1], cfg.ttl), group[3]
  local tag = state.tag
  local seen, bits = {}, {}
  if #members > 0 then
    if cfg.dedup_mode == 'exact' then
      seen = exact_seen(tag, members, cfg)
    else
      seen = bloom_seen(tag, members, bits, cfg)
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
  local hll_likely, uv_names, uv_likely, uvc_names = {}, {}, {}, {K.unique_views_all(tag)}
  state.uvc, state.uvc_list, state.uvc_all = {}, {}, hash_record(K.unique_views_all(tag))
  for _, k in ipairs(state.keys) do
    for _, c in ipairs(k.cells) do
      if c.users then
        c.name = c.hash.prefix .. k.key
        if c.hash.present[c.pos] then hll_likely[#hll_likely + 1] = c.name end
      end
    end
    for _, v in ipairs(k.views) do
      v.name = v.cell.hash.viewers_prefix .. k.key
      uv_names[#uv_names + 1] = v.name
      if v.cell.hash.present[v.cell.pos] then uv_likely[#uv_likely + 1] = v.name end
      if not state.uvc[v.day] then
        local h = hash_record(K.unique_views(tag, v.day), cfg.ttl.d)
        state.uvc[v.day] = h
        state.uvc_list[#state.uvc_list + 1] = h
        uvc_names[#uvc_names + 1] = h.name
      end
    end
  end
  for _, name in ipairs(uvc_names) do read(pcall_('HLEN', name), name, 'hash') end

  state.hll_known = known_of(hll_likely)
  check_sets(uv_names, K.absent(tag))
  state.uv_known = known_of(uv_likely)

  -- Sorted sets: ZCARD checks the type, and its size decides the trim.
  state.dirty = {}
  for i, sink in ipairs(cfg.sinks) do
    state.dirty[i] = K.dirty(tag, sink)
    read(pcall_('ZCARD', state.dirty[i]), state.dirty[i], 'zset')
  end
  state.tops, state.days, state.sizes = {}, {}, {}
  for _, h in ipairs(state.hashes) do
    if h.res == 'd' then
      state.days[#state.days + 1] = h.index
      state.tops[h.index] = {}
      local name = K.top(tag, h.index)
      state.sizes[h.index] = read(pcall_('ZCARD', name), name, 'zset')
    end
  end
  local top_all = K.top_all(tag)
  state.sizes.all = read(pcall_('ZCARD', top_all), top_all, 'zset')
  state.backlog = plan_stats(state)
  state.log = plan_log(state, group, state.backlog, cfg)
  return state
end
