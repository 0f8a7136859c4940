"""A rebuilt day's InfluxDB points, rewritten from the counts rows the rebuild left.

InfluxDB writes are absolute (a point with the same series and time replaces
the old one), so writing a day again is harmless and a smaller rebuilt value
overwrites a larger one. Which per-key points are written follows the
flusher's featured rule (featured.py) on the rebuilt values: allowlisted
keys (TALLY_INFLUX_KEYS), the top TALLY_INFLUX_TOP_N of each bucket by value
then key, and every key that already has a point in the bucket, so nothing
stale survives. A counter total or per-key point whose bucket has no row any
more is written as 0 (InfluxDB 1.x cannot delete one retention policy's points).
Points go through the sink's own line protocol and writer (influx.py).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import psycopg

from tally.backends import MEASUREMENT, TOTALS_MEASUREMENT
from tally.ingest.batch.days import kept
from tally.ingest.flusher import lineprotocol
from tally.ingest.flusher.influx import InfluxSink
from tally.ingest.flusher.influx_setup import influx_query
from tally.ingest.flusher.sink import BucketRow
from tally.resolutions import DAY, TABLE, Resolution

ROWS = """SELECT counter, key, extract(epoch FROM bucket)::bigint, value, uniques FROM {table}
WHERE bucket >= to_timestamp(%(lo)s) AND bucket < to_timestamp(%(hi)s)
  AND (%(counter)s::text IS NULL OR counter = %(counter)s)"""


def _epoch(stamp: str) -> int:
    """An RFC 3339 time as InfluxDB answers it, in epoch seconds."""
    return int(datetime.fromisoformat(stamp).timestamp())


def _existing(settings, resolution: Resolution, measurement: str, day: int,
              counter: str | None) -> set[tuple[str, str | None, int]]:
    """(counter, key or None, bucket start) of the points InfluxDB holds for the day."""
    lo, hi = day * DAY, (day + 1) * DAY
    where = f"time >= {lo}s AND time < {hi}s"
    if counter is not None:
        where += f" AND counter = {lineprotocol.influxql_string(counter)}"
    group = '"counter", "key"' if measurement == MEASUREMENT else '"counter"'
    found = set()
    results = influx_query(settings, f'SELECT value FROM "{resolution.retention_policy}".'
                                     f'"{measurement}" WHERE {where} GROUP BY {group}',
                           db=settings.influx_db)
    for result in results:
        for series in result.get("series", []):
            tags = series.get("tags", {})
            found.update((tags["counter"], tags.get("key"), _epoch(ts))
                         for ts, *_ in series["values"])
    return found


def day_rows(settings, conn: psycopg.Connection, resolution: Resolution, day: int,
             counter: str | None) -> list[BucketRow]:
    """Per-key and counter-total BucketRows of one resolution and day, as InfluxDB should hold."""
    params = {"lo": day * DAY, "hi": (day + 1) * DAY, "counter": counter}
    stored = conn.execute(ROWS.format(table=resolution.table), params).fetchall()
    conn.commit()
    code, seconds = resolution.code, resolution.seconds
    per_bucket: dict[tuple[str, int], list[tuple[int, str, int]]] = defaultdict(list)
    for c, key, start, value, uniques in stored:
        per_bucket[(c, start)].append((-value, key, uniques))
    allow, top_n = frozenset(settings.influx_keys), settings.influx_top_n
    had = _existing(settings, resolution, MEASUREMENT, day, counter)
    had_total = _existing(settings, resolution, TOTALS_MEASUREMENT, day, counter)
    rows: list[BucketRow] = []
    for (c, start), ranked in per_bucket.items():
        ranked.sort()
        top = {key for _, key, _ in ranked[:top_n]} if top_n > 0 else set()
        rows += [BucketRow(code, c, key, start // seconds, -neg, uniques)
                 for neg, key, uniques in ranked
                 if key in allow or key in top or (c, key, start) in had]
        rows.append(BucketRow(code, c, None, start // seconds, -sum(r[0] for r in ranked), None))
    gone = had - {(c, key, start) for (c, start), ranked in per_bucket.items()
                  for _, key, _ in ranked}
    rows += [BucketRow(code, c, key, start // seconds, 0, 0) for c, key, start in gone]
    rows += [BucketRow(code, c, None, start // seconds, 0, None)
             for c, _, start in had_total if (c, start) not in per_bucket]
    return rows


def rewrite_day(settings, conn: psycopg.Connection, day: int, counter: str | None,
                now: float) -> int:
    """Rewrite the day's points in every retention policy that still keeps it; points written."""
    sink = InfluxSink.from_settings(settings)
    try:
        return sum(sink.write(day_rows(settings, conn, resolution, day, counter))
                   for resolution in TABLE if kept(resolution, day, now))
    finally:
        sink.close()
