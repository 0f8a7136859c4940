"""Time series of one key: Redis buckets merged with TimescaleDB history.

Redis holds the absolute value of every recent bucket and the flusher copies
absolute values to TimescaleDB, so a bucket found in both places is the same
count seen at two moments: the merge takes the larger, never the sum. Older
buckets (expired from Redis) come from the database alone; without a
database (not configured, disabled, or down) the answer comes from Redis
alone and says so in `history`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass

import psycopg
from flask import Flask, current_app
from psycopg import sql

from tally.events import parse_timestamp
from tally.ingest.api import params
from tally.ingest.api.problems import bad_request
from tally.ingest.counting import reads
from tally.resolutions import BY_CODE, BY_STEP, DAY, HOUR, TABLE, Resolution
from tally.settings import Settings

# At most a week of minutes per request, counted as users count it: from `to - from`,
# so an unaligned week (which touches 10,081 buckets) is one request too.
MAX_STEPS = 10_080
RETRY_AFTER_FAILURE = 10.0  # seconds without database attempts after one fails
# Range answered when `from` is missing, per resolution: an hour of minutes,
# a day of hours, 30 days of days.
DEFAULT_SPAN = {"m": HOUR, "h": DAY, "d": 30 * DAY}
STEPS = tuple(r.step for r in TABLE)  # "1m", "1h", "1d"
MAX_EPOCH = 253_402_214_400  # 9999-12-31T00:00:00Z: every bucket of a range ends by year 9999
log = logging.getLogger("tally.ingest")


@dataclass(frozen=True)
class Query:
    """One series request: a key, a step and the inclusive range of bucket indexes."""

    counter: str
    key: str
    step: str
    first: int
    last: int

    @property
    def resolution(self) -> Resolution:
        """The step's row of the resolution table (Redis code, bucket length, table)."""
        return BY_STEP[self.step]

    @property
    def seconds(self) -> int:
        """Length of one bucket."""
        return self.resolution.seconds


@dataclass(frozen=True)
class Found:
    """Merged points (bucket start epoch, value) and where history came from."""

    history: str  # "timescale" | "unavailable" | "disabled"
    points: list[tuple[int, int]]


def _time_arg(name: str, default: float) -> float:
    raw = params.single_arg(name)
    if raw is None:
        return default
    try:
        value = (float(raw) if re.fullmatch(r"-?[0-9]{1,12}(\.[0-9]{1,9})?", raw)
                 else parse_timestamp(raw))
    except ValueError as exc:
        raise bad_request(f"{name} {exc} (or epoch seconds)", "invalid-parameter") from None
    if not 0 <= value <= MAX_EPOCH:
        raise bad_request(f"{name} must be between 1970-01-01 and 9999-12-31T00:00:00Z",
                          "invalid-parameter")
    return value


def query_from_args(counter: str, key: str, now: float) -> Query:
    """Read step/from/to; every bucket overlapping [from, to) is one point.

    `to - from` may span at most MAX_STEPS steps, so the answer holds at most
    MAX_STEPS + 1 points (when from and to fall inside buckets).
    """
    step = params.choice_arg("step", BY_CODE["m"].step, STEPS)
    seconds, span = BY_STEP[step].seconds, DEFAULT_SPAN[BY_STEP[step].code]
    end = _time_arg("to", now)
    start = _time_arg("from", max(0.0, end - span))
    if start >= end:
        raise bad_request("from must be earlier than to", "invalid-range")
    if end - start > MAX_STEPS * seconds:
        spans = f"{end - start:.6f}".rstrip("0").rstrip(".")
        raise bad_request(f"from-to spans {spans} s, longer than {MAX_STEPS} steps of "
                          f"{step} ({MAX_STEPS * seconds} s) per request: narrow from/to or "
                          "use a coarser step", "range-too-large")
    first, last = math.floor(start / seconds), math.ceil(end / seconds) - 1
    return Query(counter, key, step, first, last)


class History:
    """TimescaleDB reads for series, skipped for a while after a failure."""

    def __init__(self, dsn: str, enabled: bool):
        self.dsn, self.enabled = dsn, enabled
        self._down_until = 0.0

    def fetch(self, query: Query) -> tuple[str, dict[int, int]]:
        """(status, {bucket index: value}) for the query's range."""
        if not (self.enabled and self.dsn):
            return "disabled", {}
        if time.monotonic() < self._down_until:
            return "unavailable", {}
        try:
            return "timescale", self._rows(query)
        except psycopg.Error as exc:
            log.warning("series history unavailable, answering from Redis alone: %s", exc)
            self._down_until = time.monotonic() + RETRY_AFTER_FAILURE
            return "unavailable", {}

    def _rows(self, query: Query) -> dict[int, int]:
        statement = sql.SQL(
            "SELECT extract(epoch FROM bucket)::bigint, value FROM {} WHERE counter = %s "
            "AND key = %s AND bucket >= to_timestamp(%s) AND bucket < to_timestamp(%s)"
        ).format(sql.Identifier(query.resolution.table))
        bounds = (query.first * query.seconds, (query.last + 1) * query.seconds)
        with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True,
                             options="-c statement_timeout=5000") as conn:
            rows = conn.execute(statement, (query.counter, query.key, *bounds)).fetchall()
        return {epoch // query.seconds: int(value) for epoch, value in rows}


def merge(live: dict[int, int], stored: dict[int, int]) -> dict[int, int]:
    """Per bucket, the larger of the Redis and database values (both are absolute)."""
    return {index: max(value, stored.get(index, 0)) for index, value in live.items()}


def read(client, config, history: History, query: Query) -> Found:
    """The merged series for a query."""
    indexes = range(query.first, query.last + 1)
    live = reads.bucket_values(client, config, query.counter, query.key,
                               query.resolution.code, indexes)
    status, stored = history.fetch(query)
    merged = merge(live, stored)
    return Found(status, [(index * query.seconds, merged[index]) for index in indexes])


def history() -> History:
    """The current app's History."""
    return current_app.extensions["tally.history"]


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the TimescaleDB reader (disabled by series_history = false)."""
    app.extensions["tally.history"] = History(settings.postgres_dsn, settings.series_history)
