"""Flush throughput into TimescaleDB (COPY vs executemany) and InfluxDB, and event-to-SQL delay.

One minute of ACTIVE distinct keys is counted in Redis, then flushed; a row
is one (counter, key, bucket) value, so a dirty minute mark yields three
rows (minute, hour, day). Baseline in the same run: executemany vs COPY.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import redis

from ingest.counting.batch import apply_batch
from ingest.counting.config import CountingConfig
from ingest.counting.events import Event
from tally.flusher import flush
from tally.flusher.influx import InfluxSink
from tally.flusher.sink import BucketRow
from tally.flusher.timescale import TimescaleSink

NEEDS = {"redis", "postgres", "influxdb"}
ACTIVE = int(os.environ.get("BENCH_FLUSH_KEYS", "100000"))


def _rows(counter: str, minute: int) -> list[BucketRow]:
    return [BucketRow(res, counter, f"key:{i}", minute * 60 // sec, 1 + i % 97, i % 5)
            for i in range(ACTIVE) for res, sec in (("m", 60), ("h", 3600), ("d", 86400))]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sink_rows(settings, minute: int) -> list[dict]:
    out = []
    cases = [("executemany", settings.flush_batch_size), ("copy", settings.flush_batch_size),
             ("copy", 4 * settings.flush_batch_size)]
    for method, marks in cases:
        rows, batch = _rows(f"bench_{method}_{marks}", minute), 3 * marks
        sink = TimescaleSink(settings.postgres_dsn, method)
        try:
            for phase in ("new", "rewrite"):
                seconds = _timed(lambda s=sink, r=rows, b=batch: [s.write(r[i:i + b])
                                                                  for i in range(0, len(r), b)])
                out.append({"case": f"timescale {phase} ({method}, {batch} rows/txn)",
                            "rows": len(rows), "seconds": seconds, "per_s": len(rows) / seconds})
        finally:
            sink.close()
    sink = InfluxSink.from_settings(settings)
    rows = _rows("bench_influx", minute)
    try:
        for phase in ("new series", "rewrite"):
            seconds = _timed(lambda: sink.write(rows))
            out.append({"case": f"influx {phase} (20k points/request)", "rows": len(rows),
                        "seconds": seconds, "per_s": len(rows) / seconds})
    finally:
        sink.close()
    return out


def _end_to_end(client, settings, config, minute_ts: float) -> list[dict]:
    events = [Event("bench_e2e", f"key:{i}", int(minute_ts), 1, None, f"u{i % 50}")
              for i in range(ACTIVE)]
    for i in range(0, ACTIVE, 10_000):
        apply_batch(client, config, events[i:i + 10_000], now=minute_ts)
    out = []
    for sink in (TimescaleSink(settings.postgres_dsn), InfluxSink.from_settings(settings)):
        local = settings.with_(influx_top_n=100)
        try:
            start = time.perf_counter()
            result = flush.flush_sink(client, config, sink, local)
            seconds = time.perf_counter() - start
        finally:
            sink.close()
        out.append({"case": f"full flush of {ACTIVE} dirty keys -> {sink.name}",
                    "rows": result.rows, "seconds": seconds, "per_s": ACTIVE / seconds,
                    "note": "per_s = dirty keys/s (each 3 buckets)"})
    return out


def _delay(settings, samples: int = 5, interval: float = 1.0) -> list[dict]:
    env = os.environ | {"TALLY_REDIS_URL": settings.redis_url,
                        "TALLY_POSTGRES_DSN": settings.postgres_dsn,
                        "TALLY_INFLUX_URL": settings.influx_url,
                        "TALLY_FLUSH_INTERVAL": str(interval)}
    proc = subprocess.Popen([sys.executable, "-m", "tally.cli", "flush"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delays = []
    config = CountingConfig.from_settings(settings)
    try:
        with redis.Redis.from_url(settings.redis_url) as client, \
                psycopg.connect(settings.postgres_dsn, autocommit=True) as conn:
            for i in range(samples):
                accepted = time.time()
                apply_batch(client, config, [Event("bench_delay", f"d{i}", int(accepted))])
                while not conn.execute("SELECT 1 FROM counts_1m WHERE counter = 'bench_delay' "
                                       "AND key = %s", [f"d{i}"]).fetchone():
                    time.sleep(0.01)
                delays.append(time.time() - accepted)
                time.sleep(0.37)  # land at different phases of the interval
    finally:
        proc.terminate()
        proc.wait()
    return [{"case": f"event -> counts_1m delay, interval {interval:g}s (mean / max)",
             "seconds": sum(delays) / len(delays), "max_s": max(delays),
             "note": "at the default 10 s interval: + ~ (10 - 1) / 2 s mean, 10 s max"}]


def run(settings) -> list[dict]:
    """Sink throughput (both TimescaleDB methods and InfluxDB), full flushes, and delay."""
    config = CountingConfig.from_settings(settings)
    minute_ts = time.time() // 60 * 60
    rows = _sink_rows(settings, int(minute_ts) // 60)
    with redis.Redis.from_url(settings.redis_url) as client:
        rows += _end_to_end(client, settings, config, minute_ts)
    rows += _delay(settings)
    for row in rows[:6]:  # same phase, executemany as the baseline
        base = rows[0 if "new" in row["case"] else 1]["per_s"]
        row["vs_executemany"] = f"{row['per_s'] / base:.2f}x"
    return rows
