"""Fencing: a flusher frozen (SIGSTOP) while it held a sink loses the lock to another, and when
it wakes it cannot complete its write; every sink ends exact (nothing doubled, nothing lost)."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter

import psycopg
import pytest

from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import fence, flush
from tally.ingest.flusher.sink import BucketRow
from tally.ingest.flusher.sinks import build_sink
from tally.ingest.flusher.timescale import TimescaleSink
from tests.flusher_support import (
    LogReader,
    expected,
    expected_totals,
    flush_all,
    ingest,
    make_settings,
    start_flusher,
    stop_flusher,
    stored_influx,
    stored_pg,
    stream,
    wait_until,
)
from tests.reference_model import ReferenceModel
from tests.test_event_log import _row, archive_all, stored_events

KEYS = ["video:1", "a b", "k3"]  # all featured in InfluxDB: every key has a per-key point
LOCK_SECONDS = "2"  # the frozen flusher's lock runs out 2 s after it stopped renewing


def _stored_fence(dsn: str, sink: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT fence FROM sink_fence WHERE sink = %s", [sink]).fetchone()
    return row[0] if row else None


def _frozen_at(settings, sinks: str, point: str, **env) -> tuple:
    """A `tally flush` process SIGSTOPped at `point` (within its 4 s pause there), and its log."""
    proc = start_flusher(settings, sinks=sinks, flush_pause_at=point, flush_pause_seconds="4",
                         flush_lock_seconds=LOCK_SECONDS, **env)
    log = LogReader(proc)
    assert log.wait_for(f'"point": "{point}"', 60), log.seen.decode()[-2000:]
    proc.send_signal(signal.SIGSTOP)
    return proc, log


def _in_thread(target) -> tuple[threading.Thread, list]:
    """Run target() in a thread; the list receives its result or its exception."""
    out: list = []

    def run() -> None:
        try:
            out.append(target())
        except BaseException as exc:  # checked by the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _take_over(settings, run):
    """Call run() until it is not refused as held elsewhere (the frozen holder's lock runs out)."""
    deadline = time.monotonic() + 30
    while True:
        result = run()
        if not result.elsewhere:
            return result
        assert time.monotonic() < deadline, "the frozen flusher's lock never ran out"
        time.sleep(0.1)


def test_a_superseded_fence_cannot_commit(pg_dsn):
    """Two TimescaleSinks: once the second claims a newer fence, the first's write rolls back."""
    old, new = TimescaleSink(pg_dsn), TimescaleSink(pg_dsn)
    base = (_stored_fence(pg_dsn, "timescale") or 0) + 1
    try:
        assert old.claim(fence.Fence("timescale", base)) is None
        assert old.write([BucketRow("m", "views", "k", 7, 1, 1)]) == 1
        assert new.claim(fence.Fence("timescale", base + 1)) is None
        with pytest.raises(fence.FencedOut, match=f"fence {base} is older than {base + 1}"):
            old.write([BucketRow("m", "views", "k", 7, 5, 2),
                       BucketRow("m", "views", "j", 7, 3, 1)])
        assert old.claim(fence.Fence("timescale", base)) == base + 1  # refused, newer one named
        assert new.write([BucketRow("m", "views", "k", 7, 2, 1)]) == 1
    finally:
        old.close()
        new.close()
    assert stored_pg(pg_dsn) == {("m", "views", "k", 7): (2, 1)}  # nothing of the stale write


def test_frozen_timescale_writer_is_fenced_out(redis_client, redis_url, pg_dsn, influx):
    """A frozen inside its transaction (rows upserted, not committed); B takes over and claims;
    A wakes, its fence check fails and it rolls back; B's write then commits; exact counts."""
    settings = make_settings(redis_url, pg_dsn, influx, sinks=("timescale",), event_log=False,
                             flush_lock_seconds=float(LOCK_SECONDS))
    rng, model, now = random.Random(7), ReferenceModel(), time.time() - 300
    ingest(redis_client, settings, model, stream(rng, now, 200, KEYS), now)
    frozen, log = _frozen_at(settings, "timescale", "committing:timescale", event_log="off")
    frozen_fence = _stored_fence(pg_dsn, "timescale")  # A claimed it when its run began
    try:
        ingest(redis_client, settings, model, stream(rng, now, 200, KEYS), now)  # same buckets
        sink = build_sink("timescale", settings)
        config = CountingConfig.from_settings(settings)
        thread, out = _in_thread(lambda: _take_over(
            settings, lambda: flush.flush_sink(redis_client, config, sink, settings)))
        # B has claimed its fence; its own upserts wait on A's uncommitted rows.
        wait_until(lambda: _stored_fence(pg_dsn, "timescale") > frozen_fence, 30)
        frozen.send_signal(signal.SIGCONT)
        assert log.wait_for("nothing was committed", 30), log.seen.decode()[-2000:]
        thread.join(60)
        sink.close()
        assert not isinstance(out[0], BaseException), out
        assert out[0].marks > 0 and out[0].rows > 0
    finally:
        assert stop_flusher(frozen) == 0
    assert f"fence {frozen_fence} is older than" in log.seen.decode()
    flush_all(redis_client, settings)
    assert stored_pg(pg_dsn) == expected(model)
    assert not redis_client.keys("*inflight*")


def test_frozen_influx_writer_that_lands_late_remarks_its_buckets(redis_client, redis_url,
                                                                   pg_dsn, influx):
    """A frozen after its lock check, before its POST; B takes over and writes newer values;
    A's late POST puts older values back, A sees the lock gone and re-marks: the next run of
    the holder writes them again, and InfluxDB ends exact."""
    settings = make_settings(redis_url, pg_dsn, influx, sinks=("influx",), event_log=False,
                             influx_keys=tuple(KEYS), flush_lock_seconds=float(LOCK_SECONDS))
    rng, model, now = random.Random(9), ReferenceModel(), time.time() - 300
    ingest(redis_client, settings, model, stream(rng, now, 200, KEYS), now)
    frozen, log = _frozen_at(settings, "influx", "verified:influx", event_log="off")
    try:
        ingest(redis_client, settings, model, stream(rng, now, 200, KEYS), now)  # same buckets
        config = CountingConfig.from_settings(settings)
        sink = build_sink("influx", settings)
        try:
            _take_over(settings, lambda: flush.flush_sink(redis_client, config, sink, settings))
        finally:
            sink.close()
        want = expected(model)
        assert stored_influx(influx)[0] == want  # B wrote the newest values
        frozen.send_signal(signal.SIGCONT)
        assert log.wait_for("re-marked dirty", 30), log.seen.decode()[-2000:]
        # A's POST landed after B's: older values are back in InfluxDB until the next run.
        assert stored_influx(influx)[0] != want
    finally:
        assert stop_flusher(frozen) == 0
    flush_all(redis_client, settings)
    per_key, totals = stored_influx(influx)
    assert per_key == expected(model) and totals == expected_totals(model)
    assert not redis_client.keys("*inflight*")


def test_frozen_archiver_is_fenced_out(redis_client, redis_url, pg_dsn):
    """A frozen inside its COPY transaction; B takes over; A wakes and rolls back, so B stores
    every event (none of A's committed) and `events` holds each exactly once."""
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", sinks=(),
                             flush_lock_seconds=float(LOCK_SECONDS))
    rng, model, now = random.Random(13), ReferenceModel(), time.time() - 300
    ingest(redis_client, settings, model, stream(rng, now, 300, KEYS), now)
    frozen, log = _frozen_at(settings, "", "committing:events")
    frozen_fence = _stored_fence(pg_dsn, "events")
    try:
        thread, out = _in_thread(lambda: _take_over(
            settings, lambda: archive_all(redis_client, settings)))
        wait_until(lambda: _stored_fence(pg_dsn, "events") > frozen_fence, 30)
        frozen.send_signal(signal.SIGCONT)
        assert log.wait_for("nothing was committed", 30), log.seen.decode()[-2000:]
        thread.join(60)
        assert not isinstance(out[0], BaseException), out
        assert out[0].rows == len(model.logged)  # B stored them all: A committed none
    finally:
        assert stop_flusher(frozen) == 0
    assert stored_events(pg_dsn) == Counter(_row(e) for e in model.logged)
