-- Batch step, part 1 of 7: constants and helpers every later part uses (see
-- apply.lua for the whole script and the order of its parts). Nothing here
-- reads ARGV or holds state.

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
local OVERFLOW, STATE, LOG_FULL = 'TALLY_OVERFLOW', 'TALLY_STATE', 'TALLY_LOG_FULL'
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
