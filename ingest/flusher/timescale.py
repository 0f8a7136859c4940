"""TimescaleDB sink: absolute upserts into the counts tables where a smaller value never wins.

Rows go through COPY into a session-temporary staging table, then one
INSERT … SELECT … ON CONFLICT per resolution, all in one transaction. The
upsert keeps GREATEST(stored, new): writing a bucket twice is harmless, and
a Redis that restarted empty cannot shrink what was stored.

A flusher holding the sink's lock claims it with its fence (fence.py); each
write transaction then checks that fence last, so a flusher that lost the
lock cannot commit. Every exchange is bounded: the connect by its timeout, each statement by the
server's statement_timeout, and the whole write by a client-side deadline
that also ends a wait on a server that stopped answering (deadline.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import psycopg

from tally.backends import COLUMNS, PRIMARY_KEY
from tally.errors import SinkError
from tally.ingest.flusher import fence
from tally.ingest.flusher.deadline import SocketDeadline
from tally.ingest.flusher.sink import BucketRow
from tally.resolutions import RESOLUTIONS, TABLE

TABLES = {r.code: r.table for r in TABLE}  # resolution code -> counts table
# Bucket starts are staged as epoch seconds (to_timestamp on the way out): COPY
# text is then built with plain string formatting, no datetime per row.
STAGE = """CREATE TEMP TABLE IF NOT EXISTS tally_stage (
    resolution char(1), start bigint, counter text, key text, value bigint, uniques bigint
) ON COMMIT DELETE ROWS"""
UPSERT = f"""INSERT INTO {{table}} AS t ({", ".join(COLUMNS)})
{{source}}
ON CONFLICT ({", ".join(PRIMARY_KEY)}) DO UPDATE
SET value = GREATEST(t.value, EXCLUDED.value), uniques = GREATEST(t.uniques, EXCLUDED.uniques)
WHERE EXCLUDED.value > t.value OR EXCLUDED.uniques > coalesce(t.uniques, -1)"""
# The WHERE skips rewrites that change nothing: no dead tuple, no index churn.
# Sorted so concurrent flushers lock rows in the same order (no deadlocks).
FROM_STAGE = ("SELECT to_timestamp(start), counter, key, value, uniques FROM tally_stage "
              "WHERE resolution = %s ORDER BY counter, key, start")
# COPY text format: backslash, tab, newline and carriage return must be escaped.
NULL = "\\N"
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
VALUES = "VALUES (to_timestamp(%s), %s, %s, %s, %s)"


class TimescaleSink:
    """Writes per-key rows to TimescaleDB; method "copy" (default) or "executemany"."""

    name = "timescale"
    per_key = "all"

    skipped_total = 0  # PostgreSQL holds every key

    def __init__(self, dsn: str, method: str = "copy", *, connect_timeout: float = 5.0,
                 write_timeout: float = 30.0):
        if method not in ("copy", "executemany"):
            raise ValueError(f"method must be 'copy' or 'executemany', not {method!r}")
        self.dsn, self.method = dsn, method
        self.connect_timeout, self.write_timeout = connect_timeout, write_timeout
        self._conn: psycopg.Connection | None = None
        self._prepared = False
        self.fence: fence.Fence | None = None  # set by claim; None = unfenced writes

    @classmethod
    def from_settings(cls, settings, **options) -> TimescaleSink:
        """Sink for settings.postgres_dsn with the configured timeouts."""
        return cls(settings.postgres_dsn, connect_timeout=settings.sink_connect_timeout,
                   write_timeout=settings.sink_write_timeout, **options)

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, self.connect_timeout)
            self._prepared = False
        return self._conn

    def _prepare(self, conn: psycopg.Connection) -> None:
        """Session setup, once per connection: the statement timeout and the staging table."""
        if not self._prepared:
            conn.execute(statement_timeout_sql(self.write_timeout))
            conn.execute(STAGE)
            conn.commit()
            self._prepared = True

    def claim(self, held: fence.Fence) -> int | None:
        """Record a lock holder's fence; None when accepted, else the larger fence stored."""
        try:
            conn = self._connect()
            with SocketDeadline(conn.fileno(), self.write_timeout):
                self._prepare(conn)
                stored = fence.claim(conn, held)
        except psycopg.Error as exc:
            self.close()
            raise SinkError(f"TimescaleDB: recording the fence of sink {held.sink} "
                            f"failed: {exc}") from exc
        self.fence = held if stored is None else None
        return stored

    def write(self, rows: Sequence[BucketRow]) -> int:
        """Upsert the per-key rows in one transaction, fence checked last; return how many."""
        rows = [r for r in rows if r.key is not None]
        if not rows:
            return 0
        deadline = None
        try:
            conn = self._connect()
            with SocketDeadline(conn.fileno(), self.write_timeout) as deadline:
                self._prepare(conn)
                with conn.transaction():
                    (self._copy if self.method == "copy" else self._executemany)(conn, rows)
                    with conn.cursor() as cur:
                        fence.check(cur, self.fence)
        except psycopg.Error as exc:
            self.close()
            why = (f"did not finish within {self.write_timeout:g} s"
                   if deadline is not None and deadline.expired else f"failed: {exc}")
            raise SinkError(f"TimescaleDB write of {len(rows)} rows {why}") from exc
        if deadline.expired:  # the write finished as the deadline shut the socket
            self.close()
        return len(rows)

    @staticmethod
    def _copy(conn: psycopg.Connection, rows: Sequence[BucketRow]) -> None:
        with conn.cursor() as cur:
            with cur.copy("COPY tally_stage FROM STDIN") as copy:
                copy.write(copy_text(rows))
            for res, table in TABLES.items():
                cur.execute(UPSERT.format(table=table, source=FROM_STAGE), [res])

    @staticmethod
    def _executemany(conn: psycopg.Connection, rows: Sequence[BucketRow]) -> None:
        with conn.cursor() as cur:
            for res, table in TABLES.items():
                mine = sorted((r for r in rows if r.resolution == res),
                              key=lambda r: (r.counter, r.key, r.index))
                if mine:
                    cur.executemany(UPSERT.format(table=table, source=VALUES),
                                    [(r.start, r.counter, r.key, r.value, r.uniques) for r in mine])

    def close(self) -> None:
        """Close the connection (the next write reconnects)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect(dsn: str, connect_timeout: float, **options) -> psycopg.Connection:
    """A psycopg connection that gives up after connect_timeout seconds (at least 2 s)."""
    # psycopg, like libpq, takes whole seconds and raises anything below 2 to 2.
    return psycopg.connect(dsn, connect_timeout=max(2, math.ceil(connect_timeout)), **options)


def statement_timeout_sql(seconds: float) -> str:
    """SET statement_timeout for the session, in whole milliseconds."""
    return f"SET statement_timeout = {max(1, round(seconds * 1000))}"


def copy_text(rows: Sequence[BucketRow]) -> bytes:
    """Rows in COPY text format for the staging table (uniques None = NULL)."""
    return "".join([
        f"{r.resolution}\t{r.index * RESOLUTIONS[r.resolution]}\t{r.counter}\t"
        f"{r.key.translate(COPY_ESCAPES)}\t{r.value}\t"
        f"{NULL if r.uniques is None else r.uniques}\n" for r in rows]).encode()
