-- Batch step, part 3 of 7: dedup. Both modes rotate generations of window/2
-- seconds (cfg.generation, set in apply.lua) and look a member up in the
-- current generation and the two before it, so it is remembered for at least
-- `window` seconds (and at most 1.5 windows). The plan finds the positions in
-- `members` seen before; the write records the others.
-- Uses from apply_common: CHUNK, read, variadic.

local call, pcall_, floor, min = redis.call, redis.pcall, math.floor, math.min

-- Exact: one set of members per shard and generation, three SMISMEMBER and
-- one SADD per batch.
local function exact_seen(tag, members, cfg)
  local seen = {}
  for gen = cfg.generation, cfg.generation - 2, -1 do
    local name = K.dedup_ids(tag, gen)
    for from = 1, #members, CHUNK do
      local found = read(pcall_('SMISMEMBER', name,
        unpack(members, from, min(from + CHUNK - 1, #members))), name, 'set')
      for j = 1, #found do
        if found[j] == 1 then seen[from + j - 1] = true end
      end
    end
  end
  return seen
end

local function exact_record(tag, members, seen, cfg)
  local new = {}
  for j = 1, #members do
    if not seen[j] then new[#new + 1] = members[j] end
  end
  if #new > 0 then
    local current = K.dedup_ids(tag, cfg.generation)
    variadic('SADD', current, new)
    call('EXPIRE', current, cfg.window * 2, 'NX')
  end
end

-- Bloom: a filter per shard and generation; bit positions of a member come
-- from its SHA-1 by double hashing. One BITFIELD reads many members' bits;
-- the current generation is read for every member, which also checks the
-- key's type and every offset the write will set.
local function bloom_positions(member, bloom_bits, bloom_hashes)
  local digest = redis.sha1hex(member)
  local h1 = tonumber(string.sub(digest, 1, 8), 16)
  local h2 = tonumber(string.sub(digest, 9, 16), 16)
  local bits = {}
  for i = 0, bloom_hashes - 1 do bits[i + 1] = (h1 + i * h2) % bloom_bits end
  return bits
end

local function bloom_seen(tag, members, bits, cfg)
  local seen, bloom_bits, bloom_hashes = {}, cfg.bloom_bits, cfg.bloom_hashes
  local per_call = math.max(1, floor(6 * CHUNK / (3 * bloom_hashes)))
  for j = 1, #members do bits[j] = bloom_positions(members[j], bloom_bits, bloom_hashes) end
  for gen = cfg.generation, cfg.generation - 2, -1 do
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
      local name = K.bloom(tag, gen)
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

local function bloom_record(tag, members, seen, bits, cfg)
  local current, set = K.bloom(tag, cfg.generation), {}
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
  if #set > 0 then call('EXPIRE', current, cfg.window * 2, 'NX') end
end
