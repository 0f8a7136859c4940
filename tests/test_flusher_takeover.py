"""A flusher SIGKILLed while it holds every sink's lock and in-flight marks: its successor,
at the default 10 s interval, has every sink exact within 15 s, not after the 120 s lease."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

from tally import keys
from tests.flusher_support import (
    LogReader,
    expected,
    expected_totals,
    ingest,
    make_settings,
    start_flusher,
    stop_flusher,
    stored_influx,
    stored_pg,
    stream,
)
from tests.reference_model import ReferenceModel
from tests.test_event_log import _row, stored_events

KEYS = ["video:1", "video:2", "a b", *[f"k{i}" for i in range(30)]]
FEATURED = ("video:1", "a b", "k3")
# Each sink's thread stops at its first point of a run, holding the sink's lock; the two
# counting sinks also hold in-flight marks leased for TALLY_FLUSH_LEASE_SECONDS (120 s).
HOLD_POINTS = ("taken:timescale", "taken:influx", "read:events")
TAKEOVER_LIMIT = 15.0  # seconds, from the successor's start, at the default 10 s interval


def _exact_sinks(settings, model: ReferenceModel) -> set[str]:
    """The sinks that hold exactly what the model says right now."""
    want = expected(model)
    per_key, totals = stored_influx(settings.influx_url)
    done = set()
    if stored_pg(settings.postgres_dsn) == want:
        done.add("timescale")
    if (per_key == {cell: v for cell, v in want.items() if cell[2] in FEATURED}
            and totals == expected_totals(model)):
        done.add("influx")
    if stored_events(settings.postgres_dsn) == Counter(_row(e) for e in model.logged):
        done.add("events")
    return done


def test_successor_of_a_killed_flusher_takes_every_sink_over_within_15_s(
        redis_client, redis_url, pg_dsn, influx):
    settings = make_settings(redis_url, pg_dsn, influx, influx_keys=FEATURED)
    assert settings.flush_interval == 10 and settings.flush_lease_seconds == 120
    rng, model, now = random.Random(11), ReferenceModel(), time.time() - 300
    ingest(redis_client, settings, model, stream(rng, now, 300, KEYS), now)

    killed = start_flusher(settings, flush_pause_at=",".join(HOLD_POINTS),
                           flush_pause_seconds="600")
    log = LogReader(killed)
    try:
        for point in HOLD_POINTS:
            assert log.wait_for(f'"point": "{point}"', 60), log.seen.decode()[-2000:]
        for sink in ("timescale", "influx", "events"):
            assert redis_client.hget(keys.flusher_lock(sink), "owner"), sink
        for sink in ("timescale", "influx"):
            assert redis_client.keys(f"*inflight:{sink}:*"), sink
    finally:
        stop_flusher(killed, signal.SIGKILL)
    killed_at = time.monotonic()
    now += 10
    ingest(redis_client, settings, model, stream(rng, now, 100, KEYS), now)  # after the kill

    started = time.monotonic()
    successor = start_flusher(settings)  # default interval, lease and lock
    taken_over: dict[str, float] = {}
    try:
        while len(taken_over) < 3 and time.monotonic() - started < TAKEOVER_LIMIT + 10:
            for sink in _exact_sinks(settings, model) - set(taken_over):
                taken_over[sink] = round(time.monotonic() - started, 1)
            time.sleep(0.2)
    finally:
        assert stop_flusher(successor) == 0
    print(f"\ntakeover after SIGKILL, seconds from the successor's start: {taken_over} "
          f"(successor started {started - killed_at:.1f} s after the kill)")
    assert set(taken_over) == {"timescale", "influx", "events"}, taken_over
    assert max(taken_over.values()) <= TAKEOVER_LIMIT, taken_over
    assert not redis_client.keys("*inflight*")
