"""Re-seed Redis' all-time totals and today's top keys from the database after a Redis loss.

After a FLUSHALL or a restore from an old snapshot, Redis' `total` hashes and
`top:` sets hold only what was counted since. `tally rebuild --redis` sets
each key's all-time total to exactly

    database part  +  log tail

where the database part is every event the archiver stored (counts_1d of
sealed days and of days older than the oldest event kept, plus the raw
`events` of every other day, all read in one snapshot together with the
archiver's stream positions), and the log tail is every event still in the
shard's log stream past that position (counted, not yet archived), summed in
one script per shard (lua/reseed.lua). The archiver's lock is held
throughout, so no event moves from the tail to the database unseen. Today's
top keys (`top:<today>`) are re-seeded the same way, and `top:all` gets the
totals. The writes are absolute (HSET, ZADD), so running it again, or while
ingest goes on, never counts an event twice: an event counted after the
loss is in the database part or in the tail, not in both.

Events lost with Redis before the archiver stored them are gone from every
store; with `appendonly yes` and the archiver running every second that is
at most the last second before the loss.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import psycopg

from tally import keys
from tally.errors import SinkError
from tally.ingest.batch.days import day_text, when
from tally.ingest.counting import loader
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import archive, handoff, lock
from tally.ingest.flusher.timescale import connect
from tally.redis_connect import connect as connect_redis
from tally.redis_connect import disconnect
from tally.resolutions import DAY

BATCH = "tally.ingest.batch"
LOCK_WAIT = 60.0  # seconds to wait for a running archiver's lock
# The database part of every (counter, key): final day rows where the raw events
# may be gone (sealed days, days before the oldest event kept), raw events elsewhere.
TOTALS = """WITH oldest AS (SELECT coalesce(time_bucket('1 day', min(ts)), 'infinity') AS day
                FROM events)
SELECT counter, key, sum(v)::bigint, sum(t)::bigint FROM (
  SELECT counter, key, value AS v, 0 AS t FROM counts_1d
  WHERE bucket < (SELECT day FROM oldest)
     OR (bucket AT TIME ZONE 'UTC')::date IN (SELECT day FROM sealed_days)
  UNION ALL
  SELECT counter, key, value, CASE WHEN ts >= %(today)s THEN value ELSE 0 END FROM events
  WHERE ts >= (SELECT day FROM oldest)
    AND (ts AT TIME ZONE 'UTC')::date NOT IN (SELECT day FROM sealed_days)
) AS parts GROUP BY counter, key"""
POSITIONS = "SELECT stream, last_ms, last_seq FROM event_log_positions"


@dataclass(frozen=True)
class Reseeded:
    """What a re-seed wrote."""

    totals: int  # (counter, key) totals set
    top: int  # today's top-key entries set


def _database_part(settings, today: int) -> tuple[dict, dict[str, str]]:
    """({(counter, key): (all-time, today)}, {stream: "ms-seq"}) from one snapshot."""
    try:
        with connect(settings.postgres_dsn, settings.sink_connect_timeout) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                rows = conn.execute(TOTALS, {"today": when(today * DAY)}).fetchall()
                positions = {stream: f"{ms}-{seq}"
                             for stream, ms, seq in conn.execute(POSITIONS).fetchall()}
    except psycopg.Error as exc:
        raise SinkError(f"reading the database's totals failed: {exc}") from exc
    return {(c, k): (int(v), int(t)) for c, k, v, t in rows}, positions


def reseed(settings) -> Reseeded:
    """Set every key's all-time total and today's top entry to database part + log tail."""
    config = CountingConfig.from_settings(settings)
    client = connect_redis(settings, timeout=60.0)
    try:
        held = _hold_archiver(client, settings)
        with held:
            today = int(time.time() // DAY)
            part, positions = _database_part(settings, today)
            counters = sorted({c for c, _ in part} |
                              {c.decode() for c in client.smembers(keys.COUNTERS)})
            if counters:
                client.sadd(keys.COUNTERS, *counters)
            by_shard: dict[handoff.Shard, list] = defaultdict(list)
            for (counter, key), (count, today_count) in part.items():
                by_shard[handoff.Shard(counter, keys.key_shard(key, config.shards))] += [
                    key, count, today_count]
            seeded = top = 0
            day_name = day_text(today)
            for shard in handoff.discover(client, config.shards):
                args = by_shard.get(shard, [])
                sk = shard.keys
                held.verify()
                # One call per shard: its tail and its keys' parts meet in one script.
                done = loader.call(client, BATCH, "reseed",
                                   [sk.total, sk.log, sk.top(None), sk.top(today)],
                                   [positions.get(sk.log, "0-0"), day_name, config.ttl(DAY),
                                    *args])
                seeded, top = seeded + int(done[0]), top + int(done[1])
            return Reseeded(seeded, top)
    finally:
        disconnect(client)


def _hold_archiver(client, settings) -> lock.Lease:
    """The archiver's lock, waiting for a running archiver to release it."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        held = lock.acquire(client, archive.NAME, handoff.new_token(),
                            max(settings.flush_lock_seconds, 30))
        if not isinstance(held, lock.Busy):
            return held
        if time.monotonic() > deadline:
            raise SinkError(f"the archiver's lock stayed held for {LOCK_WAIT:g} s; "
                            "run `tally rebuild --redis` again")
        time.sleep(min(held.retry_in, 1.0) + 0.05)
