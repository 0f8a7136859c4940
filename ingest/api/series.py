"""Time series of one key: the serving layer's merge of Redis and TimescaleDB, bucket by bucket.

Each bucket is answered by exactly one rule, chosen by the UTC day it lies in
(a minute, hour or day bucket never straddles two days):

- sealed day (a row in sealed_days): the database row alone, the batch
  layer's exact value and distinct users rebuilt from the event log (0 when
  there is no row); Redis is not read for it.
- any other day: the larger of Redis and the database. Redis holds the
  absolute value of every recent bucket and the flusher copies absolute
  values, so a bucket found in both is the same count seen at two moments:
  the larger, never the sum. Buckets Redis has expired come from the
  database alone.

Without a database (not configured, disabled, or down) every bucket comes
from Redis and `history` says so; no bucket is then marked sealed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from flask import Flask, current_app

from tally.events import parse_timestamp
from tally.ingest.api import params
from tally.ingest.api.history import History, Stored
from tally.ingest.api.problems import bad_request
from tally.ingest.counting import reads
from tally.resolutions import BY_CODE, BY_STEP, DAY, HOUR, TABLE, Resolution
from tally.settings import Settings

# At most a week of minutes per request, counted as users count it: from `to - from`,
# so an unaligned week (which touches 10,081 buckets) is one request too.
MAX_STEPS = 10_080
# Range answered when `from` is missing, per resolution: an hour of minutes,
# a day of hours, 30 days of days.
DEFAULT_SPAN = {"m": HOUR, "h": DAY, "d": 30 * DAY}
STEPS = tuple(r.step for r in TABLE)  # "1m", "1h", "1d"
MAX_EPOCH = 253_402_214_400  # 9999-12-31T00:00:00Z: every bucket of a range ends by year 9999


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


@dataclass(frozen=True)
class Point:
    """One bucket of the answer and the rule that gave it."""

    ts: int  # bucket start, epoch seconds
    value: int
    uniques: int
    sealed: bool  # from the batch layer alone (its day is sealed)


@dataclass(frozen=True)
class Found:
    """Merged points and where history came from."""

    history: str  # "timescale" | "unavailable" | "disabled"
    points: list[Point]


def merge(query: Query, stored: Stored, live: dict[int, int],
          live_uniques: dict[int, int]) -> list[Point]:
    """One point per bucket: sealed from the database, the rest the larger of both."""
    points = []
    for index in range(query.first, query.last + 1):
        value, uniques = stored.rows.get(index, (0, 0))
        sealed = stored.sealed(query.resolution, index)
        if not sealed:
            value, uniques = max(value, live[index]), max(uniques, live_uniques[index])
        points.append(Point(index * query.seconds, value, uniques, sealed))
    return points


def read(client, config, history: History, query: Query) -> Found:
    """The merged series for a query: the database first, then Redis for unsealed buckets."""
    code = query.resolution.code
    stored = history.fetch(code, query.counter, query.key, query.first, query.last)
    unsealed = [i for i in range(query.first, query.last + 1)
                if not stored.sealed(query.resolution, i)]
    live = reads.bucket_values(client, config, query.counter, query.key, code, unsealed)
    live_uniques = reads.bucket_uniques(client, config, query.counter, query.key, code, unsealed)
    return Found(stored.status, merge(query, stored, live, live_uniques))


def history() -> History:
    """The current app's History."""
    return current_app.extensions["tally.history"]


def init_app(app: Flask, settings: Settings) -> None:
    """Attach the TimescaleDB reader (disabled by series_history = false)."""
    app.extensions["tally.history"] = History(settings.postgres_dsn, settings.series_history)
