"""Retention for TimescaleDB: each counts table keeps its resolution's keep_days (resolutions.py).

Where the server's TimescaleDB license offers background jobs, the migration
registered add_retention_policy and the server expires chunks itself. On the
Apache build (no job scheduler) the flusher calls tally_drop_expired_chunks()
(timescale/0003_retention.sql) every TALLY_FLUSH_MAINTENANCE_INTERVAL seconds;
it drops whole chunks, never deletes rows.
"""

from __future__ import annotations

import psycopg

from tally.errors import SinkError
from tally.ingest.flusher.deadline import SocketDeadline
from tally.ingest.flusher.timescale import connect, statement_timeout_sql
from tally.resolutions import TABLES


def license_name(conn: psycopg.Connection) -> str:
    """The server's timescaledb.license setting ("apache" or "timescale")."""
    return conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()[0] or ""


def chunks(conn: psycopg.Connection) -> set[str]:
    """Names of every chunk of the counts hypertables."""
    return {str(row[0]) for table in TABLES
            for row in conn.execute("SELECT show_chunks(%s::regclass)", [table])}


def run_retention(dsn: str, connect_timeout: float = 5.0, timeout: float = 30.0) -> list[str]:
    """Drop expired chunks unless the server schedules it; return the chunks dropped.

    Bounded like a sink write: connect timeout, statement_timeout, and a
    client-side deadline over the whole run.
    """
    try:
        with connect(dsn, connect_timeout, autocommit=True) as conn, \
                SocketDeadline(conn.fileno(), timeout):
            conn.execute(statement_timeout_sql(timeout))
            if license_name(conn) == "timescale":
                return []  # add_retention_policy jobs (0003) do it inside the server
            before = chunks(conn)
            conn.execute("CALL tally_drop_expired_chunks()")
            return sorted(before - chunks(conn))
    except psycopg.Error as exc:
        raise SinkError(f"TimescaleDB retention run failed: {exc}") from exc
