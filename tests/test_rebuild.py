"""Rebuild equals truth: after a hostile stream, every rebuilt bucket equals the reference."""

from __future__ import annotations

import random
import time

import psycopg

from tally.ingest.batch.rebuild import rebuild
from tally.ingest.flusher.influx import InfluxSink
from tally.ingest.flusher.sink import BucketRow
from tests.batch_support import DAY, FEATURED, count_stream, featured_in_influx, hostile_raws
from tests.flusher_support import (
    expected,
    expected_totals,
    make_settings,
    stored_influx,
    stored_pg,
)
from tests.reference_model import ReferenceModel


def _settings(redis_url, pg_dsn, influx):
    return make_settings(redis_url, pg_dsn, influx, influx_keys=FEATURED)


def _corrupt(settings, now: float) -> None:
    """What a speed layer can leave behind: inflated values and uniques (HyperLogLog
    estimates, a Redis restored from a later snapshot), rows and points with no event."""
    bogus = int(now - 1.5 * DAY) // 60 * 60  # in the range, before any event
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
        for table in ("counts_1m", "counts_1h", "counts_1d"):
            conn.execute(f"UPDATE {table} SET value = value + 3, uniques = uniques + 1 "
                         "WHERE key IN ('a b', 'ключ', '{brace}')")
        conn.execute("INSERT INTO counts_1m VALUES (to_timestamp(%s), 'views', 'ghost', 9, 0)",
                     [bogus])
    sink = InfluxSink.from_settings(settings)
    try:
        sink.write([BucketRow("m", "views", "video:1", bogus // 60, 99, 5),
                    BucketRow("m", "views", None, bogus // 60, 99, None)])
    finally:
        sink.close()


def test_rebuild_of_a_hostile_stream_equals_the_reference(redis_client, redis_url, pg_dsn,
                                                            influx):
    settings = _settings(redis_url, pg_dsn, influx)
    model, rng = ReferenceModel(), random.Random(13)
    now = time.time() - 3 * DAY  # every bucket complete: past the 24 h lateness and skew
    count_stream(redis_client, settings, model, hostile_raws(rng, now, 3000, 20 * 3600), now)
    _corrupt(settings, now)
    assert stored_pg(pg_dsn) != expected(model)

    seen = []
    report = rebuild(settings, now - 2 * DAY, now + 60, progress=seen.append)
    assert report.events == len(model.logged) and report.deleted >= 1
    assert [d.done for d in seen] == list(range(1, report.days + 1))

    assert stored_pg(pg_dsn) == expected(model)
    per_key, totals = stored_influx(influx)
    featured = featured_in_influx()
    want = {cell: v for cell, v in expected(model).items() if cell[2] in featured}
    ghost_minute = int(now - 1.5 * DAY) // 60
    assert per_key.pop(("m", "views", "video:1", ghost_minute)) == (0, 0)  # no event: zeroed
    assert per_key == want
    assert totals.pop(("m", "views", ghost_minute)) == 0
    assert totals == expected_totals(model)

    again = rebuild(settings, now - 2 * DAY, now + 60)  # re-runnable: nothing changes
    assert again.rows == 0 and again.deleted == 0 and stored_pg(pg_dsn) == expected(model)
