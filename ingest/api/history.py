"""TimescaleDB reads of the serving layer: stored buckets and which UTC days are sealed.

A sealed day's rows are the batch layer's exact values (rebuilt from the
event log, docs/flusher.md), so the API answers them from the database
alone. Rows and sealed days come from one SQL statement, hence one
snapshot: a day sealed while the request runs is seen either before its
rebuild (unsealed, old rows) or after it (sealed, rebuilt rows), never as
sealed with the rows the rebuild replaced. Reads are skipped for a while
after a failure, so a database outage costs one connect timeout per
RETRY_AFTER_FAILURE seconds, not one per request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tally.resolutions import BY_CODE, DAY, Resolution

RETRY_AFTER_FAILURE = 10.0  # seconds without database attempts after one fails
CONNECT = {"connect_timeout": 2, "autocommit": True, "options": "-c statement_timeout=5000"}
log = logging.getLogger("tally.ingest")

# Sealed days and counts rows of one key in one statement; `kind` tells them apart.
ROWS = """SELECT 'sealed', day - DATE '1970-01-01', NULL::bigint, NULL::bigint FROM sealed_days
WHERE day >= DATE '1970-01-01' + %s::int AND day <= DATE '1970-01-01' + %s::int
UNION ALL
SELECT 'row', extract(epoch FROM bucket)::bigint / %s, value, coalesce(uniques, 0) FROM {}
WHERE counter = %s AND key = %s AND bucket >= to_timestamp(%s) AND bucket < to_timestamp(%s)"""
# Sealing commits the rebuilt rows with the day's sealed_days row, so once the
# day reads as sealed its rows read after are the rebuilt ones.
TOP_OF_DAY = """SELECT key, value FROM counts_1d
WHERE counter = %s AND bucket = to_timestamp(%s) AND value > 0
ORDER BY value DESC, key COLLATE "C" LIMIT %s"""
IS_SEALED = "SELECT 1 FROM sealed_days WHERE day = DATE '1970-01-01' + %s::int"


@dataclass(frozen=True)
class Stored:
    """What the database holds for one key over a range of buckets."""

    status: str  # "timescale" | "unavailable" | "disabled"
    rows: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (value, uniques)
    sealed_days: frozenset[int] = frozenset()  # UTC day indexes (epoch // 86400)

    def sealed(self, resolution: Resolution, index: int) -> bool:
        """Whether a bucket lies in a sealed day (a minute, hour or day lies in one day)."""
        return index * resolution.seconds // DAY in self.sealed_days


class History:
    """The API's TimescaleDB reader; `enabled` is TALLY_SERIES_HISTORY."""

    def __init__(self, dsn: str, enabled: bool):
        self.dsn, self.enabled = dsn, enabled
        self._down_until = 0.0

    def fetch(self, code: str, counter: str, key: str, first: int, last: int) -> Stored:
        """Rows of buckets first..last (indexes at resolution `code`) and their sealed days."""
        status = self._status()
        if status != "timescale":
            return Stored(status)
        try:
            return self._fetch(BY_CODE[code], counter, key, first, last)
        except psycopg.Error as exc:
            self._failed(exc)
            return Stored("unavailable")

    def sealed_top(self, counter: str, day: int, k: int) -> list[tuple[str, int]] | None:
        """The top k keys of a sealed day from counts_1d; None if not sealed or no database."""
        if self._status() != "timescale":
            return None
        try:
            with psycopg.connect(self.dsn, **CONNECT) as conn:
                if not conn.execute(IS_SEALED, (day,)).fetchone():
                    return None
                rows = conn.execute(TOP_OF_DAY, (counter, day * DAY, k)).fetchall()
            return [(key, int(value)) for key, value in rows]
        except psycopg.Error as exc:
            self._failed(exc)
            return None

    def _status(self) -> str:
        if not (self.enabled and self.dsn):
            return "disabled"
        return "unavailable" if time.monotonic() < self._down_until else "timescale"

    def _failed(self, exc: psycopg.Error) -> None:
        log.warning("history unavailable, answering from Redis alone: %s", exc)
        self._down_until = time.monotonic() + RETRY_AFTER_FAILURE

    def _fetch(self, res: Resolution, counter: str, key: str, first: int, last: int) -> Stored:
        start, end = first * res.seconds, (last + 1) * res.seconds
        statement = sql.SQL(ROWS).format(sql.Identifier(res.table))
        with psycopg.connect(self.dsn, **CONNECT) as conn:
            found = conn.execute(statement, (start // DAY, (end - 1) // DAY, res.seconds,
                                             counter, key, start, end)).fetchall()
        rows = {index: (int(value), int(uniques))
                for kind, index, value, uniques in found if kind == "row"}
        days = frozenset(index for kind, index, _, _ in found if kind == "sealed")
        return Stored("timescale", rows, days)
