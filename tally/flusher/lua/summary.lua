-- Total and top entries of bucket hashes of one shard (Influx totals and top-N).
--
-- Summing server-side sends one number per hash instead of every value. With
-- n > 0 it also returns the n best (key, value) pairs, value descending then
-- key ascending, so ties cannot let more than n keys through.
-- KEYS: bucket hashes of one tag    ARGV: n
local n = tonumber(ARGV[1])
local out = {}
for _, name in ipairs(KEYS) do
  local sum, row = 0, {}
  if n > 0 then
    local flat = redis.call('HGETALL', name)
    local entries = {}
    for i = 1, #flat, 2 do
      local v = tonumber(flat[i + 1])
      sum = sum + v
      entries[#entries + 1] = {flat[i], v}
    end
    table.sort(entries, function(a, b)
      if a[2] ~= b[2] then return a[2] > b[2] end
      return a[1] < b[1]
    end)
    for i = 1, math.min(n, #entries) do
      row[#row + 1] = entries[i][1]
      row[#row + 1] = string.format('%.0f', entries[i][2])
    end
  else
    for _, v in ipairs(redis.call('HVALS', name)) do sum = sum + tonumber(v) end
  end
  table.insert(row, 1, string.format('%.0f', sum))
  out[#out + 1] = row
end
return out
