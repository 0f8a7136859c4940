"""Helpers shared by the flusher and sink tests: settings, flushing, and reading both sinks back."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import psycopg
import requests

from tally.backends import MEASUREMENT, TOTALS_MEASUREMENT
from tally.events import validate_batch
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import flush
from tally.ingest.flusher.sinks import build_sink
from tally.resolutions import TABLE
from tally.settings import load_settings
from tests.reference_model import ReferenceModel


def make_settings(redis_url: str, postgres_dsn: str, influx_url: str, **overrides):
    """Settings pointing at the given servers (no environment involved)."""
    base = {"influx_top_n": 0, "shards": 4}
    return load_settings({}, redis_url=redis_url, postgres_dsn=postgres_dsn,
                         influx_url=influx_url, **(base | overrides))


def flush_all(client, settings, timeout: float = 30.0) -> None:
    """Flush every configured sink until drained, in this process.

    A sink whose lock another flusher holds (a killed one's runs out within
    TALLY_FLUSH_LOCK_SECONDS) is retried until it is ours.
    """
    config = CountingConfig.from_settings(settings)
    deadline = time.monotonic() + timeout
    for name in settings.sinks:
        sink = build_sink(name, settings)
        try:
            while flush.flush_sink(client, config, sink, settings).elsewhere:
                assert time.monotonic() < deadline, f"the lock of sink {name} stayed held"
                time.sleep(0.1)
        finally:
            sink.close()


def stream(rng: random.Random, now: float, n: int, keys: list[str], counters=("views", "plays")):
    """Raw events with users, late and out-of-order timestamps; ~30% sent twice (retries)."""
    raws = []
    for _ in range(n):
        late = rng.choice([0, 0, 0, 30, 300, 4000, 20 * 3600])
        raw = {"counter": rng.choice(counters), "key": rng.choice(keys),
               "ts": now - late - rng.randrange(60), "value": rng.choice([1, 1, 2, 5]),
               "id": f"ev-{rng.getrandbits(64):x}"}
        if rng.random() < 0.7:
            raw["user"] = f"user-{rng.randrange(12)}"
        raws.append(raw)
        if rng.random() < 0.3:
            raws.append(dict(raw))
    rng.shuffle(raws)
    return raws


def ingest(client, settings, model: ReferenceModel, raws: list, now: float) -> None:
    """Validate and apply raw events to Redis and to the model at an explicit `now`."""
    events = validate_batch(raws, now, settings.accepted_lateness, settings.clock_skew)
    apply_batch(client, CountingConfig.from_settings(settings), events, now=now)
    model.apply(events, int(now))


def expected(model: ReferenceModel) -> dict:
    """(resolution, counter, key, index) -> (value, uniques) the sinks must hold."""
    return {(res, c, k, i): (v, len(model.users.get((c, k, res, i), ())))
            for (c, k, res, i), v in model.buckets.items()}


def expected_totals(model: ReferenceModel) -> dict:
    """(resolution, counter, index) -> total value of the counter in that bucket."""
    totals: dict = {}
    for (c, _k, res, i), v in model.buckets.items():
        totals[(res, c, i)] = totals.get((res, c, i), 0) + v
    return totals


def stored_pg(dsn: str) -> dict:
    """Every row of the counts tables as (resolution, counter, key, index) -> (value, uniques)."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for r in TABLE:
            for c, k, start, v, u in conn.execute(
                    f"SELECT counter, key, extract(epoch FROM bucket)::bigint, value, uniques "
                    f"FROM {r.table}"):
                out[(r.code, c, k, start // r.seconds)] = (v, u)
    return out


def influx_q(url: str, q: str) -> list:
    """Run an InfluxQL query on db tally; return its series."""
    body = requests.post(f"{url}/query", data={"db": "tally", "q": q, "epoch": "s"},
                         timeout=10).json()
    result = body["results"][0]
    assert "error" not in result, result
    return result.get("series", [])


def stored_influx(url: str) -> tuple[dict, dict]:
    """Per-key points and counter totals of every resolution's retention policy."""
    per_key, totals = {}, {}
    for r in TABLE:
        rp = r.retention_policy
        for s in influx_q(url, f'SELECT value, uniques FROM "{rp}".{MEASUREMENT} GROUP BY *'):
            for ts, v, u in s["values"]:
                per_key[(r.code, s["tags"]["counter"], s["tags"]["key"], ts // r.seconds)] = (v, u)
        for s in influx_q(url, f'SELECT value FROM "{rp}".{TOTALS_MEASUREMENT} GROUP BY *'):
            for ts, v in s["values"]:
                totals[(r.code, s["tags"]["counter"], ts // r.seconds)] = v
    return per_key, totals


def assert_sinks_hold(model: ReferenceModel, settings, featured) -> None:
    """Both sinks hold exactly the model: every bucket of every key in TimescaleDB, the
    featured keys' buckets and every counter total in InfluxDB, and nothing else."""
    want = expected(model)
    assert stored_pg(settings.postgres_dsn) == want
    per_key, totals = stored_influx(settings.influx_url)
    assert per_key == {cell: v for cell, v in want.items() if cell[2] in featured}
    assert totals == expected_totals(model)


def wait_until(predicate, timeout: float = 10.0) -> None:
    """Poll predicate until true or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def flusher_env(settings, **env: str) -> dict:
    """Environment of a `tally flush` process for the settings' servers, plus TALLY_* `env`."""
    return os.environ | {
        "TALLY_REDIS_URL": settings.redis_url, "TALLY_POSTGRES_DSN": settings.postgres_dsn,
        "TALLY_INFLUX_URL": settings.influx_url, "TALLY_SHARDS": str(settings.shards),
        "TALLY_INFLUX_TOP_N": str(settings.influx_top_n),
        "TALLY_INFLUX_KEYS": ",".join(settings.influx_keys)} | {
        f"TALLY_{name.upper()}": value for name, value in env.items()}


def start_flusher(settings, **env: str) -> subprocess.Popen:
    """A real `tally flush` process (its log on a pipe: await_log reads it)."""
    return subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "flush"],
                            env=flusher_env(settings, **env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


class LogReader:
    """Reads a flusher's stderr as it comes, keeping everything read so far."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen = proc, b""

    def wait_for(self, text: str, timeout: float = 30.0) -> bool:
        """Read until `text` appears; False if the process exits or the time runs out first."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen and time.monotonic() < deadline:
            if select.select([self.proc.stderr], [], [], 0.1)[0]:
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                self.seen += chunk
        return text.encode() in self.seen


def stop_flusher(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal the process (SIGCONT first, in case it is stopped) and reap it; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(sig)
    code = proc.wait(timeout=60)
    proc.stderr.close()
    return code
