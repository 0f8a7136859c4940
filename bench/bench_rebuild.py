"""The batch layer's throughput: rebuild against a bare scan, import against a raw COPY.

1. rebuild: REBUILD_EVENTS events (BENCH_REBUILD_EVENTS, default 10 million)
   generated straight into `events` over REBUILD_DAYS closed days (1,000 keys
   of one counter, users for two events in three), then `rebuild()` over
   those days (counts_1m/1h/1d; the TimescaleDB sink only, no InfluxDB)
   against `SELECT count(*)` of the same rows. `vs_base` = rebuild events/s
   / scan events/s.
2. import: IMPORT_EVENTS events (BENCH_REBUILD_IMPORT, default 200,000) as an
   NDJSON file, through `import_events()` (validation, staging, per-day load
   with the id check, rebuild of the touched days) against the same events'
   COPY text sent in one `COPY events FROM STDIN`; both into an empty table.
   `vs_base` = import events/s / COPY events/s.

Timed cases are the median of ROUNDS rounds (BENCH_REBUILD_ROUNDS, default
3), each round timing the case and its baseline, interleaved. Redis serves
only the watermark here; PostgreSQL+TimescaleDB is bench/run's, migrated:
`bench/run -k rebuild`.
"""

from __future__ import annotations

import dataclasses
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tally.events import Event  # noqa: E402
from tally.ingest.batch.importer import import_events  # noqa: E402
from tally.ingest.batch.rebuild import rebuild_days  # noqa: E402
from tally.ingest.counting.eventlog import line  # noqa: E402

NEEDS = {"redis", "postgres"}
ROUNDS = int(os.environ.get("BENCH_REBUILD_ROUNDS", "3"))
REBUILD_EVENTS = int(os.environ.get("BENCH_REBUILD_EVENTS", "10000000"))
REBUILD_DAYS = 10
IMPORT_EVENTS = int(os.environ.get("BENCH_REBUILD_IMPORT", "200000"))
DAY = 86400
TRUNCATE = "TRUNCATE events, counts_1m, counts_1h, counts_1d, sealed_days"
# Closed days (two weeks ago and before), so every bucket is complete and replaced.
GENERATE = """INSERT INTO events (ts, counter, key, id, "user", value, props, received)
SELECT to_timestamp(%(first)s + (g %% %(days)s) * 86400 + (g / %(days)s) %% 86400),
       'views', 'page:' || (g * 7919 %% 1000), 'e' || g,
       CASE WHEN g %% 3 = 0 THEN NULL ELSE 'u' || (g * 104729 %% 20000) END,
       1 + g %% 3, NULL, now()
FROM generate_series(0::bigint, %(n)s - 1) AS g"""


def _owner(settings) -> str:
    """The DSN migrations use (TRUNCATE needs the tables' owner)."""
    return getattr(settings, "postgres_owner_dsn", "") or settings.postgres_dsn


def _timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def _scan(dsn: str, lo: float, hi: float) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT count(*) FROM events WHERE ts >= to_timestamp(%s) "
                     "AND ts < to_timestamp(%s)", [lo, hi]).fetchone()


def bench_rebuild(settings) -> dict:
    first_day = int(time.time() // DAY) - 14 - REBUILD_DAYS
    days = list(range(first_day, first_day + REBUILD_DAYS))
    with psycopg.connect(_owner(settings), autocommit=True) as conn:
        conn.execute(TRUNCATE)
        conn.execute(GENERATE, {"first": first_day * DAY, "days": REBUILD_DAYS,
                                "n": REBUILD_EVENTS})
        conn.execute("VACUUM ANALYZE events")
    ratios, rates, scans = [], [], []
    for i in range(ROUNDS):
        cases = [("scan", lambda: _scan(settings.postgres_dsn, days[0] * DAY,
                                        (days[-1] + 1) * DAY)),
                 ("rebuild", lambda: rebuild_days(settings, days, influx=False))]
        timings = dict((name, _timed(fn)) for name, fn in (cases if i % 2 else cases[::-1]))
        rates.append(REBUILD_EVENTS / timings["rebuild"])
        scans.append(REBUILD_EVENTS / timings["scan"])
        ratios.append(timings["scan"] / timings["rebuild"])
    return _row(f"rebuild {REBUILD_EVENTS:,} events, {REBUILD_DAYS} days", rates, scans, ratios)


def _import_file(folder: Path, n: int) -> tuple[Path, bytes]:
    rng, now = random.Random(1), int(time.time())
    path, copy = folder / "import.ndjson", []
    with open(path, "w") as out:
        for i in range(n):
            ts = now - 20 * DAY + int(rng.random() * 15 * DAY)
            key, user = f"page:{rng.randrange(1000)}", f"u{rng.randrange(20000)}"
            out.write(f'{{"counter": "views", "key": "{key}", "id": "e{i}", "ts": {ts}, '
                      f'"user": "{user}", "value": 1}}\n')
            copy.append(line(Event("views", key, ts, id=f"e{i}", user=user), "now"))
    return path, b"".join(copy)


def _raw_copy(dsn: str, text: bytes) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, \
            cur.copy('COPY events (ts, counter, key, id, "user", value, props, received) '
                     "FROM STDIN") as copy:
        copy.write(text)


def bench_import(settings) -> dict:
    ratios, rates, copies = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        path, text = _import_file(Path(folder), IMPORT_EVENTS)

        def imported() -> None:
            with open(path, "rb") as lines:
                report = import_events(settings, lines)
            assert report.loaded == IMPORT_EVENTS, report

        for i in range(ROUNDS):
            timings = {}
            for name, fn in ((("copy", lambda: _raw_copy(settings.postgres_dsn, text)),
                              ("import", imported))[::1 if i % 2 else -1]):
                with psycopg.connect(_owner(settings), autocommit=True) as conn:
                    conn.execute(TRUNCATE)
                timings[name] = _timed(fn)
            rates.append(IMPORT_EVENTS / timings["import"])
            copies.append(IMPORT_EVENTS / timings["copy"])
            ratios.append(timings["copy"] / timings["import"])
    return _row(f"import {IMPORT_EVENTS:,} events (NDJSON, 15 days)", rates, copies, ratios)


def _row(case: str, rates: list[float], bases: list[float], ratios: list[float]) -> dict:
    """One table row: medians of the rounds, and each round's ratio to its baseline."""
    return {"case": case, "events_per_s": round(statistics.median(rates)),
            "base_events_per_s": round(statistics.median(bases)),
            "vs_base": round(statistics.median(ratios), 4),
            "rounds": [round(r, 4) for r in ratios]}


def run(settings) -> list[dict]:
    settings = dataclasses.replace(settings, sinks=("timescale",))
    try:
        return [bench_rebuild(settings), bench_import(settings)]
    finally:
        with psycopg.connect(_owner(settings), autocommit=True) as conn:
            conn.execute(TRUNCATE)
