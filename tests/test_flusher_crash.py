"""SIGKILLed flushers (at named points of the cycle, between the two sinks too) lose nothing."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

from tests.flusher_support import assert_sinks_hold, flush_all, ingest, make_settings, stream
from tests.reference_model import ReferenceModel

POINTS = ["taken:timescale", "read:timescale", "written:timescale", "released:timescale",
          "taken:influx", "read:influx", "written:influx", "released:influx"]
KEYS = ["video:1", "video:2", "a b", *[f"k{i}" for i in range(20)]]
FEATURED = ("video:1", "a b", "k3")


def _start_flusher(settings, point: str) -> subprocess.Popen:
    env = os.environ | {
        "TALLY_REDIS_URL": settings.redis_url, "TALLY_POSTGRES_DSN": settings.postgres_dsn,
        "TALLY_INFLUX_URL": settings.influx_url, "TALLY_SHARDS": str(settings.shards),
        "TALLY_INFLUX_TOP_N": "0", "TALLY_INFLUX_KEYS": ",".join(FEATURED),
        "TALLY_FLUSH_INTERVAL": "0.1", "TALLY_FLUSH_BATCH_SIZE": "8",
        "TALLY_FLUSH_LEASE_SECONDS": "1", "TALLY_SINK_WRITE_TIMEOUT": "0.9",
        "TALLY_FLUSH_LOCK_SECONDS": "1",
        "TALLY_FLUSH_PAUSE_AT": point,
        "TALLY_FLUSH_PAUSE_SECONDS": "0.3"}
    return subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "flush"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _await_log(proc: subprocess.Popen, text: str, timeout: float = 30.0) -> bool:
    """Read the flusher's log until `text` appears; False if it exits or times out first."""
    deadline, seen = time.monotonic() + timeout, b""
    while text.encode() not in seen and time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stderr], [], [], 0.1)[0]:
            seen += os.read(proc.stderr.fileno(), 65536)
    return text.encode() in seen


def _kill_when_paused(proc: subprocess.Popen, point: str, timeout: float = 20.0) -> bool:
    """SIGKILL the flusher once it logs a pause at point; False if it never got there."""
    paused = _await_log(proc, f'"point": "{point}"', timeout)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return paused


def assert_exact_after_clean_flush(redis_client, settings, model) -> None:
    """One clean flush; then both sinks equal the model and no mark is left in flight."""
    flush_all(redis_client, settings)
    assert_sinks_hold(model, settings, FEATURED)
    assert not redis_client.keys("*inflight*") and not redis_client.keys("*leases*")


def test_killed_flushers_never_lose_or_double_count(redis_client, redis_url, pg_dsn, influx):
    """>= 20 kills at every point while events arrive; after recovery both sinks are exact."""
    settings = make_settings(redis_url, pg_dsn, influx, influx_keys=FEATURED)
    rng, model, now = random.Random(3), ReferenceModel(), time.time() - 300
    kills = 0
    for i in range(24):
        point = POINTS[i % len(POINTS)]
        proc = _start_flusher(settings, point)
        ingest(redis_client, settings, model, stream(rng, now, 40, KEYS), now)  # while it runs
        now += 10
        kills += _kill_when_paused(proc, point)
    assert kills >= 20
    time.sleep(1.1)  # every lease expires; the clean flush recovers the marks
    assert_exact_after_clean_flush(redis_client, settings, model)


def test_concurrent_flushers_never_lose_or_double_count(redis_client, redis_url, pg_dsn, influx):
    """Three flushers at once, small batches, events arriving: each mark is stored once, exact."""
    settings = make_settings(redis_url, pg_dsn, influx, influx_keys=FEATURED)
    rng, model, now = random.Random(5), ReferenceModel(), time.time() - 300
    procs = [_start_flusher(settings, "") for _ in range(3)]
    try:
        for _ in range(30):
            ingest(redis_client, settings, model, stream(rng, now, 40, KEYS), now)
            now += 5
            time.sleep(0.05)
        # SIGTERM before a process is up (imports, under load) would kill it outright.
        assert all(_await_log(proc, '"message": "flushed"') for proc in procs)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=30) == 0
            proc.stderr.close()
    assert_exact_after_clean_flush(redis_client, settings, model)
