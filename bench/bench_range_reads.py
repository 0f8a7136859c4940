"""Latency of the range reads: exact distinct users and breakdowns over 1 and 30 days.

The `events` table is filled straight in SQL (generate_series, one INSERT per
day, both indexes in place as in production), not through Redis: PER_DAY
events a day (BENCH_RANGE_READS_PER_DAY, default 1,000,000) for DAYS days
(BENCH_RANGE_READS_DAYS, default 30), one counter, keys Zipf-like over 10,000
(`video:0` the hottest), USERS users, 80% of events with a `country` of 8.
Then ANALYZE, as autovacuum would.

Each case is timed through ingest/api/event_reads.py, the code the API runs
(a connection of its own, the statement, the rows), RUNS times
(BENCH_RANGE_READS_RUNS, default 5); the table shows the median (p50_ms) and
every run. The watermark's Redis read the API adds is one pipelined round
trip and is not part of these figures.

Alternatives for the 30-day distinct users are measured next to it, to say
what would get it under 2 s: the API's statement counts the groups of a
`GROUP BY "user"` (hash aggregate, parallel workers); `count(DISTINCT
"user")`, which sorts in one process, is its baseline; both also with a
work_mem of BIG_WORK_MEM instead of the default 4 MB; and a rollup
of the distinct (counter, day, user) of each day, built once per sealed day
(its build time per day is shown), over which the
30-day count(DISTINCT) reads one row per user and day instead of one per event.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tally.ingest.api.event_reads import EventReads, Span  # noqa: E402
from tally.settings import Settings  # noqa: E402

NEEDS = {"postgres"}
DAYS = int(os.environ.get("BENCH_RANGE_READS_DAYS", "30"))
PER_DAY = int(os.environ.get("BENCH_RANGE_READS_PER_DAY", "1000000"))
RUNS = int(os.environ.get("BENCH_RANGE_READS_RUNS", "5"))
USERS = 200_000
DAY = 86400
COUNTRIES = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL"]
BIG_WORK_MEM = "256MB"  # PostgreSQL's default is 4MB: a 30-day sort or hash spills to disk

LOAD_DAY = """INSERT INTO events (ts, counter, key, id, "user", value, props, received)
SELECT t, 'views', 'video:' || floor(power(random(), 3) * 10000)::int, NULL,
       'u-' || floor(random() * %(users)s)::int, 1,
       CASE WHEN random() < 0.8 THEN jsonb_build_object(
           'country', (%(countries)s::text[])[1 + floor(random() * 8)::int]) END, t
FROM generate_series(to_timestamp(%(start)s), to_timestamp(%(start)s + 86400) - interval '1 us',
                     make_interval(secs => 86400.0 / %(per_day)s)) AS t"""
DISTINCT_USERS = """SELECT count(DISTINCT "user") FROM events WHERE counter = 'views'
AND ts >= to_timestamp(%s) AND ts < to_timestamp(%s)"""
BUILD_ROLLUP = """INSERT INTO bench_daily_users
SELECT counter, %s::date, "user" FROM events
WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s) AND "user" IS NOT NULL
GROUP BY counter, "user\""""
ROLLUP_USERS = """SELECT count(DISTINCT "user") FROM bench_daily_users
WHERE counter = 'views' AND day >= %s::date AND day < %s::date"""


def load(owner_dsn: str, start: int) -> float:
    """Fill `events` with DAYS days from start; seconds it took."""
    began = time.perf_counter()
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE events")
        for day in range(DAYS):
            conn.execute(LOAD_DAY, {"users": USERS, "countries": COUNTRIES,
                                    "start": start + day * DAY, "per_day": PER_DAY})
            print(f"  loaded day {day + 1}/{DAYS}", file=sys.stderr, flush=True)
        conn.execute("ANALYZE events")
    return time.perf_counter() - began


def timed(call, runs: int = RUNS) -> tuple[float, list[float], object]:
    """(median seconds, every run's seconds, the last result) of `runs` calls."""
    seconds, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), seconds, result


def row(case: str, days: int, measured: tuple, answer) -> dict:
    p50, runs, _ = measured
    print(f"  {case}, {days} d: p50 {p50 * 1000:.0f} ms, runs "
          f"{' '.join(f'{s * 1000:.0f}' for s in runs)}, answer {answer}",
          file=sys.stderr, flush=True)
    return {"case": case, "days": days, "events": days * PER_DAY, "p50_ms": round(p50 * 1000),
            "runs_ms": " ".join(f"{s * 1000:.0f}" for s in runs), "answer": answer}


def api_cases(reads: EventReads, end: int) -> list[dict]:
    rows = []
    for days in sorted({1, DAYS}):
        whole, hot = (Span("views", key, end - days * DAY, end) for key in (None, "video:0"))
        measured = timed(lambda s=whole: reads.uniques(s))
        rows.append(row("uniques, whole counter", days, measured, measured[2][0]))
        measured = timed(lambda s=hot: reads.uniques(s))
        rows.append(row("uniques, hottest key", days, measured, measured[2][0]))
        measured = timed(lambda s=whole: reads.breakdown(s, "country", 10))
        rows.append(row("breakdown by country, whole counter", days, measured,
                        len(measured[2].top)))
    return rows


def alternatives(owner_dsn: str, start: int, end: int) -> list[dict]:
    """What would bring the 30-day distinct users down: a hash GROUP BY, a daily rollup."""
    rows = []
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        measured = timed(lambda: conn.execute(DISTINCT_USERS, (start, end)).fetchone()[0])
        rows.append(row("alt: count(DISTINCT user)", DAYS, measured, measured[2]))
        conn.execute(f"SET work_mem = '{BIG_WORK_MEM}'")
        whole = Span("views", None, start, end)
        with_memory = EventReads("", 600)
        with_memory._run = lambda statement, args: conn.execute(statement, args).fetchall()
        measured = timed(lambda: with_memory.uniques(whole))
        rows.append(row(f"alt: uniques, work_mem {BIG_WORK_MEM}", DAYS, measured,
                        measured[2][0]))
        measured = timed(lambda: conn.execute(DISTINCT_USERS, (start, end)).fetchone()[0])
        rows.append(row(f"alt: count(DISTINCT user), work_mem {BIG_WORK_MEM}", DAYS, measured,
                        measured[2]))
        conn.execute("RESET work_mem")
        conn.execute("DROP TABLE IF EXISTS bench_daily_users")
        conn.execute("CREATE TABLE bench_daily_users (counter text, day date, \"user\" text)")
        began = time.perf_counter()
        for day in range(DAYS):
            first = start + day * DAY
            conn.execute(BUILD_ROLLUP, (time.strftime("%Y-%m-%d", time.gmtime(first)),
                                        first, first + DAY))
        build = (time.perf_counter() - began) / DAYS
        conn.execute("CREATE INDEX ON bench_daily_users (counter, day)")
        conn.execute("ANALYZE bench_daily_users")
        size = conn.execute("SELECT count(*) FROM bench_daily_users").fetchone()[0]
        days = [time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (start, end)]
        measured = timed(lambda: conn.execute(ROLLUP_USERS, days).fetchone()[0])
        rows.append({**row("alt: uniques from a daily user rollup", DAYS, measured, measured[2]),
                     "note": f"{size:,} rollup rows, built in {build:.2f} s per day"})
        conn.execute("DROP TABLE bench_daily_users")
    return rows


def run(settings: Settings) -> list[dict]:
    """Load the events, time every case, empty the table again."""
    end = int(time.time()) // DAY * DAY
    start = end - DAYS * DAY
    owner = settings.postgres_owner_dsn or settings.postgres_dsn
    loaded = load(owner, start)
    reads = EventReads(settings.postgres_dsn, timeout=600)
    try:
        rows = [{"case": "load (INSERT ... generate_series)", "days": DAYS,
                 "events": DAYS * PER_DAY, "p50_ms": round(loaded * 1000),
                 "note": f"{DAYS * PER_DAY / loaded:,.0f} events/s"}]
        rows += api_cases(reads, end)
        rows += alternatives(owner, start, end)
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("TRUNCATE events")
    return rows
