-- Total and top entries of bucket hashes of one shard (InfluxDB totals and top-N).
--
-- Summing server-side sends one number per hash instead of every value. With
-- n > 0 it also returns the n best (key, value) pairs, value descending then
-- key ascending, so ties cannot let more than n keys through.
-- KEYS: bucket hashes of one tag    ARGV: n
local n = tonumber(ARGV[1])

local function better(k1, v1, k2, v2)
  if v1 ~= v2 then return v1 > v2 end
  return k1 < k2
end

local function top(flat)
  local sum, entries = 0, {}
  for i = 1, #flat, 2 do
    local v = tonumber(flat[i + 1])
    sum = sum + v
    entries[#entries + 1] = {flat[i], v}
  end
  if #entries > n then
    table.sort(entries, function(a, b) return better(a[1], a[2], b[1], b[2]) end)
  end
  return sum, entries
end

local function insertion(flat)
  local sum, keys, vals, size = 0, {}, {}, 0
  for i = 1, #flat, 2 do
    local k, v = flat[i], tonumber(flat[i + 1])
    sum = sum + v
    if size < n or better(k, v, keys[size], vals[size]) then
      local j = size < n and size + 1 or size
      while j > 1 and better(k, v, keys[j - 1], vals[j - 1]) do
        keys[j], vals[j] = keys[j - 1], vals[j - 1]
        j = j - 1
      end
      keys[j], vals[j] = k, v
      if size < n then size = size + 1 end
    end
  end
  local entries = {}
  for i = 1, size do entries[i] = {keys[i], vals[i]} end
  return sum, entries
end

-- Small n: keep the best n in a sorted array (one comparison for most
-- entries). Large n: sort everything once. A hash with at most n entries is
-- returned whole, unsorted (the caller ranks across shards anyway).
local function best(flat)
  local sum, entries
  if n <= 128 and #flat / 2 > n then sum, entries = insertion(flat) else sum, entries = top(flat) end
  local row = {string.format('%.0f', sum)}
  for i = 1, math.min(n, #entries) do
    row[#row + 1] = entries[i][1]
    row[#row + 1] = string.format('%.0f', entries[i][2])
  end
  return row
end

local out = {}
for _, name in ipairs(KEYS) do
  if n > 0 then
    out[#out + 1] = best(redis.call('HGETALL', name))
  else
    local sum = 0
    for _, v in ipairs(redis.call('HVALS', name)) do sum = sum + tonumber(v) end
    out[#out + 1] = {string.format('%.0f', sum)}
  end
end
return out
