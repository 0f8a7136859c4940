"""Rebuild: recompute counts_1m/1h/1d and the InfluxDB points of a range exactly from `events`.

The range is widened to whole UTC days and worked one day at a time: one
transaction per day runs one set-based statement per resolution (INSERT …
SELECT time_bucket … GROUP BY … ON CONFLICT DO UPDATE) and one DELETE, so a
long range never holds one huge transaction and the flusher waits at most for
one day's statements on the rows they share. Rows are written in the
flusher's lock order (counter, key, bucket), so the two never deadlock there.

What a day's statement writes depends on the watermark W (watermark.py),
read once per day before its transaction:

- a complete bucket (end + TALLY_ACCEPTED_LATENESS + TALLY_CLOCK_SKEW <= W) gets its exact value
  sum(value) and exact uniques count(DISTINCT "user") (0 for a key whose
  events carry no user, as the flusher writes for an absent HyperLogLog),
  and may become smaller; a complete bucket with no event left is deleted;
- any other bucket keeps GREATEST(stored, rebuilt): events counted in Redis
  but not yet archived are in the stored value only, and a rebuild run too
  early must not lose them.

InfluxDB points of the day are then rewritten from what the transaction left
(writes are absolute, so rewriting is idempotent): every counter total, and
per-key points of the keys the flusher features (featured.py's rule, judged
on the rebuilt values: allowlisted or in the top TALLY_INFLUX_TOP_N) plus
every key that already had a point there, so no stale point survives; a
point whose bucket has no row left is written as 0.

A resolution is skipped for days past its retention (counts_1m keeps 7 days,
counts_1h 365): the rows would only be dropped again, and InfluxDB refuses
points older than its retention policy. Every step is idempotent, so an
interrupted rebuild is finished by running it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg

from tally.errors import SinkError
from tally.ingest.batch import influx_rewrite
from tally.ingest.batch.days import day_range, day_text, kept, when
from tally.ingest.batch.watermark import archived_until, complete_before
from tally.ingest.flusher.timescale import connect, statement_timeout_sql
from tally.redis_connect import connect as connect_redis
from tally.redis_connect import disconnect
from tally.resolutions import DAY, TABLE

# One statement per resolution: the day's events grouped into the table's buckets,
# replacing complete buckets and raising the others. %(cutoff)s = W - lateness - skew.
UPSERT = """INSERT INTO {table} AS t (bucket, counter, key, value, uniques)
SELECT time_bucket(%(length)s::interval, ts) AS b, counter, key, sum(value),
       count(DISTINCT "user")
FROM events
WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(counter)s::text IS NULL OR counter = %(counter)s)
GROUP BY counter, key, b
ORDER BY counter, key, b
ON CONFLICT (counter, key, bucket) DO UPDATE SET
  value = CASE WHEN t.bucket + %(length)s::interval <= %(cutoff)s THEN EXCLUDED.value
               ELSE GREATEST(t.value, EXCLUDED.value) END,
  uniques = CASE WHEN t.bucket + %(length)s::interval <= %(cutoff)s THEN EXCLUDED.uniques
                 ELSE GREATEST(t.uniques, EXCLUDED.uniques) END
WHERE t.value IS DISTINCT FROM EXCLUDED.value OR t.uniques IS DISTINCT FROM EXCLUDED.uniques"""
# Complete buckets of the day that no event of the day falls in any more.
DELETE = """DELETE FROM {table} AS t
WHERE t.bucket >= %(lo)s AND t.bucket < %(hi)s AND t.bucket + %(length)s::interval <= %(cutoff)s
  AND (%(counter)s::text IS NULL OR t.counter = %(counter)s)
  AND NOT EXISTS (SELECT 1 FROM events e
                  WHERE e.ts >= %(lo)s AND e.ts < %(hi)s  -- constants: one chunk is read
                    AND e.counter = t.counter AND e.key = t.key
                    AND e.ts >= t.bucket AND e.ts < t.bucket + %(length)s::interval)"""
COUNT_EVENTS = """SELECT count(*) FROM events
WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(counter)s::text IS NULL OR counter = %(counter)s)"""

Progress = Callable[["DayDone"], None]


@dataclass(frozen=True)
class DayDone:
    """What one day's rebuild did (handed to the progress callback)."""

    day: int  # UTC day index (epoch seconds // 86400)
    done: int  # days finished so far, this one included
    days: int  # days in the range
    events: int  # events of the day read
    rows: int  # counts rows inserted or changed
    deleted: int  # counts rows deleted
    points: int  # InfluxDB points written


@dataclass
class RebuildReport:
    """Totals of a rebuild run."""

    days: int = 0
    events: int = 0
    rows: int = 0
    deleted: int = 0
    points: int = 0
    seconds: float = 0.0
    watermark: float = 0.0  # W as read for the last day
    per_day: list[DayDone] = field(default_factory=list)


def rebuild_day(conn: psycopg.Connection, day: int, counter: str | None, watermark: float,
                settings, now: float) -> tuple[int, int, int]:
    """Rebuild one day's counts rows in the caller's transaction: (events, rows, deleted).

    A day past the events' retention with no event left is left alone: the log
    no longer says anything about it, and its rows are the record.
    """
    params = {"lo": when(day * DAY), "hi": when((day + 1) * DAY), "counter": counter,
              "cutoff": when(complete_before(settings, watermark))}
    rows = deleted = 0
    with conn.cursor() as cur:
        events = cur.execute(COUNT_EVENTS, params).fetchone()[0]
        if not events and day * DAY < now - settings.events_retention * DAY:
            return 0, 0, 0
        for resolution in TABLE:
            if not kept(resolution, day, now):
                continue
            length = {"length": f"{resolution.seconds} seconds"}
            if events:
                cur.execute(UPSERT.format(table=resolution.table), params | length)
                rows += cur.rowcount
            cur.execute(DELETE.format(table=resolution.table), params | length)
            deleted += cur.rowcount
    return events, rows, deleted


def rebuild(settings, start: float, end: float, counter: str | None = None,
            progress: Progress | None = None, *, influx: bool | None = None,
            before_commit: Callable[[psycopg.Connection, int, int], None] | None = None,
            ) -> RebuildReport:
    """Rebuild every UTC day touching [start, end) (epoch seconds), one transaction per day.

    `influx`: rewrite InfluxDB points too (default: when "influx" is a sink).
    `before_commit(conn, day, events)`: runs last in each day's transaction
    (sealing records the day there).
    """
    return rebuild_days(settings, list(day_range(start, end)), counter, progress,
                        influx=influx, before_commit=before_commit)


def rebuild_days(settings, days: Sequence[int], counter: str | None = None,
                 progress: Progress | None = None, *, influx: bool | None = None,
                 before_commit: Callable[[psycopg.Connection, int, int], None] | None = None,
                 ) -> RebuildReport:
    """Rebuild the given UTC day indexes, in order, one transaction per day (see rebuild)."""
    influx = "influx" in settings.sinks if influx is None else influx
    report, began = RebuildReport(), time.monotonic()
    client = connect_redis(settings)
    try:
        with connect(settings.postgres_dsn, settings.sink_connect_timeout) as conn:
            # Never prepared: a generic plan of a day's statement would not know which
            # chunk the day is and read them all; each execution is planned for its day.
            conn.prepare_threshold = None
            conn.execute(statement_timeout_sql(settings.sink_write_timeout))
            conn.commit()
            for done, day in enumerate(days, 1):
                watermark = archived_until(client, settings)
                now = time.time()
                try:
                    with conn.transaction():
                        events, rows, deleted = rebuild_day(
                            conn, day, counter, watermark, settings, now)
                        if before_commit is not None:
                            before_commit(conn, day, events)
                except psycopg.Error as exc:
                    raise SinkError(f"rebuild of {day_text(day)} failed "
                                    f"(run it again to go on): {exc}") from exc
                points = (influx_rewrite.rewrite_day(settings, conn, day, counter, now)
                          if influx else 0)
                finished = DayDone(day, done, len(days), events, rows, deleted, points)
                report.days, report.events = done, report.events + events
                report.rows, report.deleted = report.rows + rows, report.deleted + deleted
                report.points, report.watermark = report.points + points, watermark
                report.per_day.append(finished)
                if progress is not None:
                    progress(finished)
    finally:
        disconnect(client)
    report.seconds = time.monotonic() - began
    return report
