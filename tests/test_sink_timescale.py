"""TimescaleDB sink: absolute upserts where a smaller value never overwrites a larger one."""

from __future__ import annotations

import pytest

from tally.ingest.flusher.sink import BucketRow
from tally.ingest.flusher.timescale import TimescaleSink
from tests.flusher_support import stored_pg


@pytest.mark.parametrize("method", ["copy", "executemany"])
def test_rewrites_are_idempotent_and_never_shrink(method, pg_dsn):
    """Same value twice = one row; larger replaces; smaller (Redis restarted empty) is ignored."""
    sink = TimescaleSink(pg_dsn, method)
    try:
        for value, uniques in ((5, 2), (5, 2), (9, 3), (1, 1)):
            assert sink.write([BucketRow(r, "views", "k", 100, value, uniques)
                               for r in "mhd"]) == 3
    finally:
        sink.close()
    assert stored_pg(pg_dsn) == {(r, "views", "k", 100): (9, 3) for r in "mhd"}


def test_counter_totals_are_not_written_to_timescale(pg_dsn):
    """Rows without a key (InfluxDB totals) are not per-key rows."""
    sink = TimescaleSink(pg_dsn)
    try:
        assert sink.write([BucketRow("m", "views", None, 1, 5, None)]) == 0
    finally:
        sink.close()
    assert stored_pg(pg_dsn) == {}
