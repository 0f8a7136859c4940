"""Sealing: each UTC day that can no longer change is rebuilt once and recorded as final.

A day d is sealable when (d + 1) * 86400 + TALLY_ACCEPTED_LATENESS +
TALLY_CLOCK_SKEW <= W, the archive watermark (watermark.py): no event for it can still be accepted,
and every event accepted for it is in `events`. Sealing rebuilds the day
(rebuild.py; every bucket of it is then complete, so exact) and inserts its
sealed_days row as the last statement of the same transaction: a day is
sealed exactly when its rebuilt rows are committed. From then on the flusher
skips the day's rows (flusher/sealed.py) and the API may serve it from the
database alone.

Only days the log holds events for are sealed (a day's chunk of `events`
exists): without events there is nothing to rebuild from, and rebuilding
would delete the day's rows. `tally import` seals again (rebuilds) the days
it added events to; its events were never in Redis, so nothing else would.

It runs in the flusher's maintenance step (`tally flush`, every
TALLY_FLUSH_MAINTENANCE_INTERVAL seconds), at most DAYS_PER_RUN days a run,
oldest first, so a first run over weeks of log does not hold up the flusher.
"""

from __future__ import annotations

import logging

import psycopg
import redis

from tally.errors import SinkError
from tally.ingest.batch.days import day_text
from tally.ingest.batch.rebuild import rebuild
from tally.ingest.batch.watermark import archived_until, complete_before
from tally.ingest.flusher import sealed
from tally.ingest.flusher.timescale import connect
from tally.redis_connect import connect as connect_redis
from tally.redis_connect import disconnect
from tally.resolutions import DAY

DAYS_PER_RUN = 4
# Days with a chunk of `events` (chunks are one UTC day: 0005_events.sql) that are not sealed.
CANDIDATES = """SELECT DISTINCT (extract(epoch FROM range_start)::bigint / 86400)::int AS day
FROM timescaledb_information.chunks
WHERE hypertable_name = 'events'
  AND range_start::date NOT IN (SELECT day FROM sealed_days)
  AND extract(epoch FROM range_start) + 86400 <= %(complete_before)s
ORDER BY day"""
RECORD = """INSERT INTO sealed_days (day, events) VALUES (to_timestamp(%s)::date, %s)
ON CONFLICT (day) DO UPDATE SET sealed_at = now(), events = EXCLUDED.events"""
log = logging.getLogger("tally.ingest.batch")


def sealable_days(settings, watermark: float) -> list[int]:
    """Unsealed days the log holds events for whose end + lateness is behind the watermark."""
    with connect(settings.postgres_dsn, settings.sink_connect_timeout) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(CANDIDATES, {
            "complete_before": complete_before(settings, watermark)}).fetchall()
    return [day for (day,) in rows]


def record(conn, day: int, events: int) -> None:
    """Mark a day sealed in the caller's (the rebuild's) transaction."""
    conn.execute(RECORD, [day * DAY, events])


def seal_days(settings, days: list[int]) -> list[int]:
    """Rebuild and seal the given days, one transaction each; return the days sealed."""
    for day in days:
        rebuild(settings, day * DAY, (day + 1) * DAY, before_commit=record)
        log.info("sealed", extra={"fields": {"day": day_text(day)}})
    if days:
        sealed.invalidate()  # this process's flushes see the new seals at once
    return days


def seal_closed_days(settings, limit: int = DAYS_PER_RUN) -> list[int]:
    """Seal up to `limit` sealable days, oldest first; return them."""
    client = connect_redis(settings)
    try:
        watermark = archived_until(client, settings)
    finally:
        disconnect(client)
    return seal_days(settings, sealable_days(settings, watermark)[:limit])


def maintenance_step(settings) -> None:
    """The flusher's sealing step; failures are logged and retried at the next interval."""
    if not settings.event_log:
        return
    try:
        seal_closed_days(settings)
    except (SinkError, psycopg.Error, redis.RedisError) as exc:
        log.error("sealing failed", extra={"fields": {"error": str(exc)}})


def flush_main(args, settings) -> int:
    """Entry point of `tally flush`: the flusher's workers with sealing in their maintenance."""
    from tally.ingest.flusher import loop

    return loop.main(args, settings, maintenance=(maintenance_step,))
