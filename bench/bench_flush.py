"""Flush throughput into TimescaleDB and InfluxDB against raw-ingest ceilings, and event delay.

One minute of ACTIVE distinct keys is counted in Redis, then flushed; a row
is one (counter, key, bucket) value, so a dirty minute mark yields three
rows (minute, hour, day). Baselines in the same run: a raw COPY of
pre-built text of the same rows straight into the tables (TimescaleDB's
ingest ceiling here: no staging, no upsert) and raw POSTs of pre-built
line-protocol bodies (InfluxDB's). `vs_raw` is a case's rows/s as a
fraction of its sink's ceiling.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import redis

from tally.events import Event
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import flush, handoff
from tally.ingest.flusher.influx import InfluxSink
from tally.ingest.flusher.sink import BucketRow
from tally.ingest.flusher.timescale import TABLES, TimescaleSink

NEEDS = {"redis", "postgres", "influxdb"}
ACTIVE = int(os.environ.get("BENCH_FLUSH_KEYS", "100000"))
INFLUX_CASES = [  # (chunk, gzip, writers)
    (5_000, False, 1), (10_000, False, 1), (20_000, False, 1), (10_000, True, 1),
    (10_000, False, 2), (10_000, True, 2)]


def _rows(counter: str, minute: int) -> list[BucketRow]:
    return [BucketRow(res, counter, f"key:{i}", minute * 60 // sec, 1 + i % 97, i % 5)
            for i in range(ACTIVE) for res, sec in (("m", 60), ("h", 3600), ("d", 86400))]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_timed(fn, repeat: int = 3) -> float:
    """Median of several timings: InfluxDB's background compactions make single runs noisy."""
    return sorted(_timed(fn) for _ in range(repeat))[repeat // 2]


def _row(case: str, rows: int, seconds: float, **extra) -> dict:
    return {"case": case, "rows": rows, "seconds": seconds, "per_s": rows / seconds, **extra}


def _raw_copy(settings, minute: int) -> dict:
    """COPY pre-built text of the rows straight into counts_1m/1h/1d (new rows, one txn)."""
    rows = _rows("bench_raw", minute)
    stamp = {r.start: datetime.fromtimestamp(r.start, UTC).isoformat() for r in rows[:3]}
    text = {res: "".join(f"{stamp[r.start]}\t{r.counter}\t{r.key}\t{r.value}\t{r.uniques}\n"
                         for r in rows if r.resolution == res).encode() for res in TABLES}

    def copy(conn):
        with conn.transaction(), conn.cursor() as cur:
            for res, table in TABLES.items():
                with cur.copy(f"COPY {table} (bucket, counter, key, value, uniques) "
                              "FROM STDIN") as out:
                    out.write(text[res])

    with psycopg.connect(settings.postgres_dsn) as conn:
        seconds = _timed(lambda: copy(conn))
    return _row("timescale raw COPY into the tables (baseline)", len(rows), seconds)


def _timescale(settings, minute: int) -> list[dict]:
    out = []
    for method, marks in (("executemany", 5_000), ("copy", 5_000), ("copy", 20_000)):
        rows, batch = _rows(f"bench_{method}_{marks}", minute), 3 * marks
        sink = TimescaleSink(settings.postgres_dsn, method)
        try:
            for phase in ("new", "rewrite"):
                seconds = _timed(lambda s=sink, r=rows, b=batch: [s.write(r[i:i + b])
                                                                  for i in range(0, len(r), b)])
                out.append(_row(f"timescale sink {phase} ({method}, {batch} rows/txn)",
                                len(rows), seconds))
        finally:
            sink.close()
    return out


def _raw_post(settings, rows: list[BucketRow], writers: int, phase: str) -> dict:
    """POST pre-built 10k-line bodies of rows, no compression."""
    sink = InfluxSink.from_settings(settings, writers=writers)
    try:
        bodies = sink.bodies(rows)
        seconds = _median_timed(lambda: sink.post(bodies)) if phase == "rewrite" \
            else _timed(lambda: sink.post(bodies))
    finally:
        sink.close()
    return _row(f"influx raw POST of pre-built bodies, {phase}, {writers} writer(s)"
                f"{', median of 3' if phase == 'rewrite' else ''}",
                sum(n for _, _, n in bodies), seconds)


def _influx(settings, minute: int) -> list[dict]:
    """New series (raw, then the default sink), then every transport option rewriting them.

    Rewrites of the same series compare the options fairly: new series make
    InfluxDB's index grow, which slows each later case down.
    """
    fresh, rows = _rows("bench_influx_raw", minute), _rows("bench_influx", minute)
    raw_new = _raw_post(settings, fresh, 1, "new series")
    sink = InfluxSink.from_settings(settings)
    try:
        new = _row("influx sink new series (default options)", len(rows),
                   _timed(lambda: sink.write(rows)))
    finally:
        sink.close()
    raw_rewrite = _raw_post(settings, rows, 1, "rewrite")
    out = [_raw_post(settings, rows, 2, "rewrite")]
    for chunk, gz, writers in INFLUX_CASES:
        sink = InfluxSink.from_settings(settings, chunk=chunk, gzip=gz, writers=writers)
        label = f"{chunk // 1000}k/POST{', gzip' if gz else ''}, {writers} writer(s)"
        try:
            out.append(_row(f"influx sink rewrite ({label}), median of 3", len(rows),
                            _median_timed(lambda s=sink: s.write(rows))))
        finally:
            sink.close()
    return _vs(raw_new, [new]) + _vs(raw_rewrite, out)


def _end_to_end(client, settings, config, minute_ts: float) -> list[dict]:
    out = []
    cases = [("timescale", 100, ""), ("influx", 100, ", top 100 featured"),
             ("influx", ACTIVE, ", every key featured")]
    for i, (name, top_n, label) in enumerate(cases):
        events = [Event(f"bench_e2e_{i}", f"key:{k}", int(minute_ts), 1, None, f"u{k % 50}")
                  for k in range(ACTIVE)]
        for start in range(0, ACTIVE, 10_000):
            apply_batch(client, config, events[start:start + 10_000], now=minute_ts)
        client.delete(*(s.keys.dirty(other) for s in handoff.discover(client, config.shards)
                        for other in ("timescale", "influx") if other != name))
        sink = TimescaleSink(settings.postgres_dsn) if name == "timescale" \
            else InfluxSink.from_settings(settings)
        try:
            start = time.perf_counter()
            result = flush.flush_sink(client, config, sink, settings.with_(influx_top_n=top_n))
            seconds = time.perf_counter() - start
        finally:
            sink.close()
        out.append(_row(f"full flush of {ACTIVE} dirty keys -> {name}{label}", result.rows,
                        seconds, keys_per_s=ACTIVE / seconds))
    return out


def _delay(settings, samples: int = 5, interval: float = 1.0) -> list[dict]:
    env = os.environ | {"TALLY_REDIS_URL": settings.redis_url,
                        "TALLY_POSTGRES_DSN": settings.postgres_dsn,
                        "TALLY_INFLUX_URL": settings.influx_url,
                        "TALLY_FLUSH_INTERVAL": str(interval)}
    proc = subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "flush"], env=env,
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


def _vs(base: dict, rows: list[dict]) -> list[dict]:
    """Add vs_raw: each row's rows/s as a fraction of the baseline's."""
    return [base, *({**r, "vs_raw": f"{r['per_s'] / base['per_s']:.2f}"} for r in rows)]


def run(settings) -> list[dict]:
    """Raw baselines, sink throughput, full flushes of ACTIVE keys, and event delay."""
    config = CountingConfig.from_settings(settings)
    minute_ts = time.time() // 60 * 60
    minute = int(minute_ts) // 60
    timescale = _vs(_raw_copy(settings, minute), _timescale(settings, minute))
    influx = _influx(settings, minute)
    with redis.Redis.from_url(settings.redis_url) as client:
        full = _end_to_end(client, settings, config, minute_ts)
    # The top-100 InfluxDB flush writes a few hundred points: no ceiling applies to it.
    full = [*_vs(timescale[0], full[:1])[1:], full[1], *_vs(influx[0], full[2:])[1:]]
    return timescale + influx + full + _delay(settings)
