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
--       ttl_viewers, top_capacity, log_max, sink_count, sinks..., registry,
--       counter_count, counters..., payload, log texts...
-- log_max: 0 when the event log is off, else the unarchived events a shard's
--   log may hold before the shard's batches are refused (TALLY_LOG_FULL; a
--   batch is refused once the log is full, so it may pass the bound by one batch).
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
--   With the log on, one more item: the byte length of each member's log
--   line; and after the payload two raw arguments per group, in group
--   order: the log lines (COPY text, see ingest/counting/eventlog.py) of
--   the members' events, in members' order, and the lines of the group's
--   events without an id. The group's log entry (XADD <tag>log * n <events>
--   e <lines>) holds the lines of exactly the events it counted: a
--   duplicate is never logged.
-- Returns {applied, duplicates, keys (or "key field") that could not be updated,
-- the largest backlog of a log written (ingest/counting/backpressure.py)}.

-- The script is this file's parts, concatenated by ingest/counting/loader.py
-- after the key prelude (K, from tally/keys.py) in this order:
-- apply_common (constants, helpers), apply_hash (hash records), apply_dedup,
-- apply_aggregate, apply_plan, apply_write, and this file (ARGV, main).
-- Run-time values reach the parts only as parameters (cfg, state).

local call, pcall_, floor = redis.call, redis.pcall, math.floor

-- Run-time settings of this call, passed to the parts that need them.
local now, window = tonumber(ARGV[1]), tonumber(ARGV[3])
local cfg = {
  now = now, dedup_mode = ARGV[2], window = window,
  generation = floor(now / math.max(1, floor(window / 2))),
  bloom_bits = tonumber(ARGV[4]), bloom_hashes = tonumber(ARGV[5]),
  ttl = {m = tonumber(ARGV[6]), h = tonumber(ARGV[7]), d = tonumber(ARGV[8])},
  ttl_viewers = tonumber(ARGV[9]), top_capacity = tonumber(ARGV[10]),
  log_max = tonumber(ARGV[11]), sinks = {},
}
local sink_count = tonumber(ARGV[12])
for i = 1, sink_count do cfg.sinks[i] = ARGV[12 + i] end
local registry, counter_count = ARGV[13 + sink_count], tonumber(ARGV[14 + sink_count])
local counters = {}
for i = 1, counter_count do counters[i] = ARGV[14 + sink_count + i] end
local groups = cjson.decode(ARGV[15 + sink_count + counter_count])
if cfg.log_max ~= 0 then  -- each group's raw log arguments follow the JSON
  for i, group in ipairs(groups) do
    local at = 14 + sink_count + counter_count + 2 * i
    group.member_lines, group.other_lines = ARGV[at], ARGV[at + 1]
  end
end

local planned = {}
for i, group in ipairs(groups) do planned[i] = plan_group(group, cfg) end
if counter_count > 0 then read(pcall_('SCARD', registry), registry, 'set') end
-- The first writes: the log entries, undone if one fails; nothing after them can fail.
append_logs(planned)
local applied, duplicates, damaged, fullest = 0, 0, {}, 0
for _, state in ipairs(planned) do
  state.damaged = damaged
  write_group(state, cfg)
  applied, duplicates = applied + state.events, duplicates + state.duplicates
  fullest = math.max(fullest, state.backlog + (state.log and state.events or 0))
end
if counter_count > 0 then call('SADD', registry, unpack(counters)) end
return {applied, duplicates, damaged, fullest}
