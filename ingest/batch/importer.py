"""Backfill: `tally import FILE|-` loads NDJSON events of any age into `events`, then rebuilds.

Each line is one event in the API's format, checked by the API's own
validator (tally.events.validate_event) with no lateness limit (history of
any age is the point) and the usual clock skew for the future. A bad line is
reported with its line number and field.

Three phases, each set-based:

1. stage: lines are read in chunks of CHUNK; a chunk's events are COPYed
   (as the log's own line format, counting/eventlog.py) into a session
   staging table in one transaction, all or nothing. With --on-error stop
   (the default: a file with bad lines is usually the wrong file or format,
   and stopping early costs nothing, since a re-run skips what was loaded) the
   import stops at the first chunk with a bad line and loads none of it; with
   --on-error skip the bad lines are reported and the rest is loaded.
2. load: one transaction per UTC day moves the day's staged events into
   `events`, received = now, leaving out an event whose id is already in
   `events` for the same counter, key and day of ts, or earlier in the file
   (the API's dedup identity is counter, key and id; the day bounds the
   lookup to one chunk of `events`). Events without an id cannot be
   recognised and are loaded each time, as the API counts each such post.
3. rebuild: every day that received events is rebuilt (rebuild.py) and, when
   it is closed (end + lateness behind the watermark), sealed in the same
   transaction: its events were never in Redis, so nothing else would count them.

Events older than TALLY_EVENTS_RETENTION days are imported too: the rebuild
writes their day (and hour, within its 365 days) rows, and the flusher's
retention drops their raw rows at its next run. The counts stay; the raw
events go, as they would had they been posted then.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import psycopg

from tally.errors import SinkError
from tally.events import Event, validate_event
from tally.ingest.batch import seal
from tally.ingest.batch.days import when
from tally.ingest.batch.rebuild import RebuildReport, rebuild_days
from tally.ingest.batch.watermark import archived_until, complete_before
from tally.ingest.counting.eventlog import line as event_line
from tally.ingest.counting.eventlog import timestamp_text
from tally.ingest.flusher.timescale import connect
from tally.redis_connect import connect as connect_redis
from tally.redis_connect import disconnect
from tally.resolutions import DAY

CHUNK = 10_000  # lines per all-or-nothing chunk
WORKERS = max(1, min(4, os.cpu_count() or 1))  # validating processes
MAX_REPORTED = 100  # bad lines listed; the rest are counted
STAGE = """CREATE TEMP TABLE IF NOT EXISTS import_stage
(LIKE events INCLUDING DEFAULTS)"""
COPY_STAGE = ('COPY import_stage (ts, counter, key, id, "user", value, props, received) '
              "FROM STDIN")
STAGED_DAYS = "SELECT DISTINCT (extract(epoch FROM ts)::bigint / 86400)::int FROM import_stage"
# The day's staged events not yet in `events`: every id-less one, and of each
# (counter, key, id) one row, unless `events` holds it on that day already.
LOAD_DAY = """INSERT INTO events (ts, counter, key, id, "user", value, props, received)
SELECT ts, counter, key, id, "user", value, props, %(received)s FROM (
  SELECT * FROM import_stage WHERE ts >= %(lo)s AND ts < %(hi)s AND id IS NULL
  UNION ALL
  SELECT DISTINCT ON (counter, key, id) * FROM import_stage s
  WHERE ts >= %(lo)s AND ts < %(hi)s AND id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM events e
                    WHERE e.ts >= %(lo)s AND e.ts < %(hi)s AND e.counter = s.counter
                      AND e.key = s.key AND e.id = s.id)
) AS fresh"""


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# JSON as the API reads it: NaN and Infinity are not JSON.
DECODER = json.JSONDecoder(parse_constant=_no_constant)


@dataclass
class ImportReport:
    """What an import did."""

    lines: int = 0
    staged: int = 0  # valid events read
    loaded: int = 0  # events added to `events` (the rest were there already)
    bad: int = 0  # bad lines (skipped, or the one the import stopped at)
    problems: list[str] = field(default_factory=list)  # "line N: field: message", at most 100
    stopped_at: int | None = None  # line number of the bad line that stopped the import
    days: list[int] = field(default_factory=list)  # days that received new events
    rebuild: RebuildReport | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds: stage, load, rebuild


def parse_line(text: str, now: float, skew: int) -> tuple[Event | None, list[str]]:
    """One NDJSON line as an Event, or its problems as "field: message" texts."""
    try:
        raw = DECODER.decode(text)
    except ValueError as exc:
        return None, [f"not valid JSON: {getattr(exc, 'msg', str(exc))}"]
    # No lateness limit: any age down to the epoch.
    event, problems = validate_event(raw, now, int(now) + 1, skew)
    return event, [f"{name or 'event'}: {message}" for name, message in problems]


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for number, raw in enumerate(lines, 1):
        chunk.append((number, raw))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class Checked:
    """One chunk checked: its events as COPY text, and its bad lines."""

    copy: bytes
    events: int
    bad: list[tuple[int, list[str]]]  # (line number, problems)


def check_chunk(chunk: list[tuple[int, bytes]], now: float, skew: int,
                received: str) -> Checked:
    """Validate a chunk's lines and build the COPY text of its events (in a worker process)."""
    out, bad = [], []
    for number, raw in chunk:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append((number, [f"not UTF-8 at byte {exc.start}"]))
            continue
        if not text.strip():
            continue  # blank lines are allowed, as in the API's NDJSON
        event, problems = parse_line(text, now, skew)
        if problems:
            bad.append((number, problems))
        else:
            out.append(event_line(event, received))
    return Checked(b"".join(out), len(out), bad)


def checked_chunks(lines: Iterable[bytes], size: int, now: float, skew: int,
                   received: str) -> Iterator[tuple[int, Checked]]:
    """(last line number, Checked) per chunk, in order, validated by WORKERS processes.

    Validation is the import's costly part (the API's validator in Python):
    processes run it side by side, at most 2 chunks each ahead of the loader.
    """
    with ProcessPoolExecutor(WORKERS) as pool:
        ahead: deque = deque()
        for part in _chunks(lines, size):
            ahead.append((part[-1][0], pool.submit(check_chunk, part, now, skew, received)))
            if len(ahead) >= 2 * WORKERS:
                last, future = ahead.popleft()
                yield last, future.result()
        while ahead:
            last, future = ahead.popleft()
            yield last, future.result()


Progress = Callable[[ImportReport, int], None]  # (report so far, bytes read)


def import_events(settings, lines: Iterable[bytes], *, on_error: str = "stop",
                  chunk: int = CHUNK, progress: Progress | None = None,
                  bytes_read: Callable[[], int] = lambda: 0,
                  rebuild_progress=None) -> ImportReport:
    """Import NDJSON lines (bytes, newline-terminated or not); see the module doc."""
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be stop or skip, not {on_error!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 line, not {chunk}")
    report, began = ImportReport(), time.monotonic()
    now = time.time()
    received = timestamp_text(now)
    try:
        with connect(settings.postgres_dsn, settings.sink_connect_timeout) as conn:
            conn.prepare_threshold = None  # each day's load planned for its chunk (rebuild.py)
            conn.execute(STAGE)
            conn.execute("TRUNCATE import_stage")
            conn.commit()
            for last, checked in checked_chunks(lines, chunk, now, settings.clock_skew,
                                                received):
                report.lines = last
                for number, problems in checked.bad:
                    report.bad += 1
                    room = max(MAX_REPORTED - len(report.problems), 0)
                    report.problems += [f"line {number}: {p}" for p in problems[:room]]
                if checked.bad and on_error == "stop":
                    report.stopped_at = checked.bad[0][0]
                    break
                with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_STAGE) as copy:
                    copy.write(checked.copy)
                report.staged += checked.events
                if progress is not None:
                    progress(report, bytes_read())
            report.phases["stage"] = time.monotonic() - began
            # Each day's load reads its slice of the stage through this index.
            conn.execute("CREATE INDEX import_stage_ts ON import_stage (ts)")
            conn.execute("ANALYZE import_stage")
            staged_days = sorted(day for (day,) in conn.execute(STAGED_DAYS).fetchall())
            conn.commit()
            for day in staged_days:
                with conn.transaction():
                    cur = conn.execute(LOAD_DAY, {"lo": when(day * DAY),
                                                  "hi": when((day + 1) * DAY),
                                                  "received": when(now)})
                    report.loaded += cur.rowcount
                    if cur.rowcount:  # a day whose events were all there needs no rebuild
                        report.days.append(day)
            conn.execute("DROP TABLE import_stage")
            conn.commit()
            report.phases["load"] = time.monotonic() - began - report.phases["stage"]
    except psycopg.Error as exc:
        raise SinkError(f"import failed after line {report.lines} (run it again: events with "
                        f"an id already loaded are skipped): {exc}") from exc
    report.rebuild = _rebuild_days(settings, report.days, rebuild_progress)
    report.seconds = time.monotonic() - began
    report.phases["rebuild"] = report.rebuild.seconds
    return report


def _rebuild_days(settings, days: list[int], progress=None) -> RebuildReport:
    """Rebuild each day that received events; seal the closed ones in the same transaction."""
    if not days:
        return RebuildReport()
    client = connect_redis(settings)
    try:
        watermark = archived_until(client, settings)
    finally:
        disconnect(client)

    def seal_closed(conn, day: int, events: int) -> None:
        if (day + 1) * DAY <= complete_before(settings, watermark):
            seal.record(conn, day, events)

    return rebuild_days(settings, days, before_commit=seal_closed, progress=progress)
