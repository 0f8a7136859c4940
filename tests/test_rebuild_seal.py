"""Sealing: closed days are rebuilt and recorded once, and the flusher leaves them alone."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter

import psycopg
import pytest

from tally.events import Event
from tally.ingest.batch.seal import seal_closed_days, sealable_days
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import sealed
from tests.batch_support import DAY, count_stream, hostile_raws, truncate_sealed
from tests.flusher_support import expected, flush_all, flusher_env, make_settings, stored_pg
from tests.reference_model import ReferenceModel


@pytest.fixture
def sealed_clean(postgres_owner_dsn):
    yield
    truncate_sealed(postgres_owner_dsn)


def _sealed(dsn: str) -> dict[int, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT (day - date '1970-01-01'), events FROM sealed_days").fetchall()
    return dict(rows)


def test_closed_days_are_sealed_exactly_and_the_flusher_skips_them(
        redis_client, redis_url, pg_dsn, sealed_clean):
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", sinks=("timescale",))
    model, rng = ReferenceModel(), random.Random(2)
    old = time.time() - 3 * DAY  # closed days: past the 24 h lateness
    count_stream(redis_client, settings, model, hostile_raws(rng, old, 1200, 20 * 3600), old)
    recent = time.time()  # today's events: not sealable
    count_stream(redis_client, settings, model, hostile_raws(rng, recent, 200, 3600), recent)
    per_day = Counter(event.ts // DAY for event in model.logged)
    closed = sorted(day for day in per_day if day < old // DAY + 1)

    # Sealing runs in `tally flush`'s maintenance step.
    env = flusher_env(settings, sinks="timescale", flush_maintenance_interval="600")
    done = subprocess.run([sys.executable, "-m", "tally.stack.cli", "flush", "--once"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _sealed(pg_dsn) == {day: per_day[day] for day in closed}
    assert sealable_days(settings, time.time()) == []
    assert stored_pg(pg_dsn) == expected(model)

    # A Redis restored from an old snapshot re-marks a sealed day with other values: the
    # flusher does not write them. This process read sealed_days before `tally flush` sealed
    # them; invalidate() stands for the REFRESH seconds after which it reads them again.
    assert seal_closed_days(settings) == []
    sealed.invalidate()
    stale = Event("views", "video:1", closed[-1] * DAY + 5, value=1000)
    apply_batch(redis_client, CountingConfig.from_settings(settings), [stale], now=old)
    before = stored_pg(pg_dsn)
    flush_all(redis_client, settings)
    assert stored_pg(pg_dsn) == before
