-- Read many cells of one shard in one call: absolute values, or InfluxDB candidates.
--
-- Keys arrive as one concatenated string plus their byte lengths (one
-- argument each instead of one per key: far cheaper for the client to send),
-- and the reply is one string of space-separated numbers. Values come from
-- one HMGET per bucket hash, in slices to stay inside Lua's stack.
--
-- mode 'cells': per key "value uniques" ("0 0" where the bucket lacks the
--   key). uniques is PFCOUNT of the cell's HyperLogLog, named by the bucket's
--   prefix plus the key inside the same hash tag (single slot on a Cluster).
-- mode 'featured': per candidate "position value member" (position 1-based
--   within its bucket), where a candidate is a key the bucket holds whose
--   value >= min ('-' = none by value), that is in the featured set, or
--   whose allow flag is '1'. The exact top-N rank is decided by the caller.
-- KEYS: per bucket its hash, and in mode 'featured' then its featured set
-- ARGV: mode, then per bucket: HLL prefix (cells) or min (featured), keys
--       concatenated, their byte lengths space-separated, allow flags ('0'/'1'
--       per key, or '' for none)
local mode = ARGV[1]
local featured = mode == 'featured'
local out, o = {}, 0

local function split(joined, lengths)
  local names, pos = {}, 1
  for len in string.gmatch(lengths, '%d+') do
    names[#names + 1] = string.sub(joined, pos, pos + len - 1)
    pos = pos + len
  end
  return names
end

-- One reply per name of a variadic read (HMGET, SMISMEMBER), in chunks below
-- Lua's unpack limit.
local function per_name(command, key, names)
  local replies = {}
  for s = 1, #names, 1000 do
    local part = redis.call(command, key, unpack(names, s, math.min(s + 999, #names)))
    for j = 1, #part do replies[s + j - 1] = part[j] end
  end
  return replies
end

local step = featured and 2 or 1
for b = 1, #KEYS, step do
  local a = 2 + (b - 1) / step * 4
  local names = split(ARGV[a + 1], ARGV[a + 2])
  local values = per_name('HMGET', KEYS[b], names)
  if featured then
    local min = ARGV[a] == '-' and math.huge or tonumber(ARGV[a])
    local found, allow = per_name('SMISMEMBER', KEYS[b + 1], names), ARGV[a + 3]
    for j = 1, #names do
      local v = values[j]
      if v and (tonumber(v) >= min or found[j] == 1 or string.byte(allow, j) == 49) then
        out[o + 1], out[o + 2], out[o + 3] = j, v, found[j]
        o = o + 3
      end
    end
    out[o + 1] = '|'  -- end of this bucket's candidates
    o = o + 1
  else
    for j = 1, #names do
      local v = values[j]
      if v then
        out[o + 1], out[o + 2] = v, redis.call('PFCOUNT', ARGV[a] .. names[j])
      else
        out[o + 1], out[o + 2] = 0, 0
      end
      o = o + 2
    end
  end
end
return table.concat(out, ' ')
