"""Redis loss drill: Redis is flushed mid-stream, posting goes on, and `tally rebuild` with
`--redis` brings every sink and the real-time totals back to the reference."""

from __future__ import annotations

import random
import subprocess
import sys
import time

from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tests.batch_support import DAY, FEATURED, count_stream, featured_in_influx, hostile_raws
from tests.flusher_support import (
    expected,
    expected_totals,
    flusher_env,
    ingest,
    make_settings,
    stored_influx,
    stored_pg,
)
from tests.reference_model import ReferenceModel


def _tally(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tally.stack.cli", *args], capture_output=True,
                          text=True, env=flusher_env(settings), timeout=120)


def _realtime_mismatches(client, config, model: ReferenceModel) -> list:
    wrong = []
    for counter in ("views", "plays"):
        names = sorted(model.keys(counter))
        got = dict(zip(names, reads.totals(client, config, counter, names), strict=True))
        wrong += [(counter, k, got[k], model.total(counter, k)) for k in names
                  if got[k] != model.total(counter, k)]
        today = int(time.time() // DAY)
        for day in (None, today):
            if reads.top(client, config, counter, 10, day) != model.top(counter, 10, day):
                wrong.append((counter, "top", day))
    return wrong


def test_rebuild_and_reseed_after_flushall_restore_everything(redis_client, redis_url, pg_dsn,
                                                              influx):
    settings = make_settings(redis_url, pg_dsn, influx, influx_keys=FEATURED)
    config = CountingConfig.from_settings(settings)
    model, rng = ReferenceModel(), random.Random(7)
    now = time.time()
    count_stream(redis_client, settings, model, hostile_raws(rng, now, 1500, 6 * 3600), now)

    redis_client.flushall()  # the loss; dedup memory goes with it
    model.seen.clear()
    count_stream(redis_client, settings, model, hostile_raws(rng, now, 800, 6 * 3600), now)
    # Posting goes on: counted, neither archived nor flushed when the repair runs.
    ingest(redis_client, settings, model, hostile_raws(rng, now, 300, 3600), now)
    assert _realtime_mismatches(redis_client, config, model)
    assert stored_pg(pg_dsn) != expected(model)

    done = _tally(settings, "rebuild", "--from", str(now - DAY), "--to", str(now + 600),
                  "--redis")
    assert done.returncode == 0, done.stderr
    assert "rebuild: 1/" in done.stderr and "re-seeded Redis" in done.stderr

    assert _realtime_mismatches(redis_client, config, model) == []
    # The sinks hold every archived event; the unarchived tail reaches them with the
    # next archiver run and flush, then a rebuild of the day makes them exact.
    count_stream(redis_client, settings, model, [], now)
    assert _tally(settings, "rebuild", "--from", str(now - DAY), "--to", str(now)).returncode == 0
    assert stored_pg(pg_dsn) == expected(model)
    per_key, totals = stored_influx(influx)
    featured = featured_in_influx()
    assert per_key == {cell: v for cell, v in expected(model).items() if cell[2] in featured}
    assert totals == expected_totals(model)

    again = _tally(settings, "rebuild", "--from", str(now - DAY), "--to", str(now), "--redis")
    assert again.returncode == 0, again.stderr  # re-seeding twice counts nothing twice
    assert _realtime_mismatches(redis_client, config, model) == []
