-- Batch step, part 6 of 7: the write phase of one group. No command here can
-- fail (see apply.lua for THE RULE).
-- Uses from apply_common: CHUNK, variadic; from apply_hash: hash_add,
-- hset_pairs, write_hash; from apply_dedup: exact_record, bloom_record.

local call, pcall_, min = redis.call, redis.pcall, math.min

-- Top sets take absolute counts and are trimmed once they pass twice their
-- capacity; `before` is the set's size before the batch (0: a new set,
-- which gets its TTL).
local function zadd_top(name, args, before, top_capacity, ttl_seconds)
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

local function write_key(state, k, dirty, cfg)
  local now, ttl_viewers = cfg.now, cfg.ttl_viewers
  for _, c in ipairs(k.cells) do
    local h = c.hash
    if c.users and pfadd(c.name, c.users, state.damaged) and not state.hll_known[c.name] then
      call('EXPIRE', c.name, cfg.ttl[h.res], 'NX')
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

local function write_group(state, cfg)
  local tag, ttl = state.tag, cfg.ttl
  if #state.members > 0 then
    if cfg.dedup_mode == 'exact' then
      exact_record(tag, state.members, state.seen, cfg)
    else
      bloom_record(tag, state.members, state.seen, state.bits, cfg)
    end
  end
  for _, h in ipairs(state.hashes) do write_hash(h) end
  write_hash(state.total)
  local dirty = {}
  for _, k in ipairs(state.keys) do write_key(state, k, dirty, cfg) end
  for _, h in ipairs(state.uvc_list) do write_views(h, state.damaged) end
  write_views(state.uvc_all, state.damaged)
  -- Score = when the mark was first set (NX), so the flusher can report its lag.
  if #dirty > 0 then
    for _, name in ipairs(state.dirty) do variadic('ZADD', name, dirty, 'NX') end
  end
  for _, day in ipairs(state.days) do
    zadd_top(K.top(tag, day), state.tops[day], state.sizes[day], cfg.top_capacity, ttl.d)
  end
  for _, cu in ipairs(state.counter_users) do
    if pfadd(cu.name, cu.users, state.damaged) then call('EXPIRE', cu.name, ttl[cu.res], 'NX') end
  end
  local top_all = {}
  for pos, key in ipairs(state.total.fields) do
    top_all[#top_all + 1] = state.total.values[pos]
    top_all[#top_all + 1] = key
  end
  zadd_top(K.top_all(tag), top_all, state.sizes.all, cfg.top_capacity)
  local stats = K.stats(tag)
  if state.events > 0 then call('HINCRBY', stats, 'events', state.events) end
  if state.duplicates > 0 then call('HINCRBY', stats, 'duplicates', state.duplicates) end
  if state.value > 0 then call('HINCRBYFLOAT', stats, 'value', state.value) end
  if state.log then call('HINCRBY', stats, 'log_backlog', state.events) end
end

-- The log entries of every group go first, before any other write: XADD is
-- the one write that can still fail (a foreign stream ID at its maximum, or
-- maxmemory, which Redis checks at a script's first write), and when it does
-- the entries already added are deleted again, so the batch changes nothing.
local function append_logs(planned)
  local added = {}
  for _, state in ipairs(planned) do
    local log = state.log
    if log then
      local id = pcall_('XADD', log.name, '*', 'n', state.events, 'e', log.text)
      if type(id) == 'table' then
        for _, entry in ipairs(added) do call('XDEL', entry[1], entry[2]) end
        error(id)
      end
      added[#added + 1] = {log.name, id}
    end
  end
end
