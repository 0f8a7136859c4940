"""Retention for TimescaleDB: each counts table keeps its resolution's keep_days (resolutions.py),
the `events` table TALLY_EVENTS_RETENTION days.

Where the server's TimescaleDB license offers background jobs, the migration
registered add_retention_policy and the server expires chunks itself. On the
Apache build (no job scheduler) the flusher calls tally_drop_expired_chunks()
(timescale/0003_retention.sql) every TALLY_FLUSH_MAINTENANCE_INTERVAL seconds;
it drops whole chunks, never deletes rows. The events' retention is a
setting, so the flusher drops their chunks itself under either license.
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


EVENTS = "events"


def chunks(conn: psycopg.Connection, tables=(*TABLES, EVENTS)) -> set[str]:
    """Names of every chunk of the counts and events hypertables."""
    return {str(row[0]) for table in tables
            for row in conn.execute("SELECT show_chunks(%s::regclass)", [table])}


def run_retention(dsn: str, connect_timeout: float = 5.0, timeout: float = 30.0,
                  events_days: int | None = None) -> list[str]:
    """Drop expired chunks unless the server schedules it; return the chunks dropped.

    `events_days`: how many days the events table keeps (None: leave it).
    Bounded like a sink write: connect timeout, statement_timeout, and a
    client-side deadline over the whole run.
    """
    try:
        with connect(dsn, connect_timeout, autocommit=True) as conn, \
                SocketDeadline(conn.fileno(), timeout):
            conn.execute(statement_timeout_sql(timeout))
            before = chunks(conn)
            if license_name(conn) != "timescale":  # else add_retention_policy jobs (0003)
                conn.execute("CALL tally_drop_expired_chunks()")
            if events_days is not None:
                # As the table's owner (0007_roles.sql): drop_chunks needs ownership.
                conn.execute("SELECT tally_drop_event_chunks(%s)", [events_days])
            return sorted(before - chunks(conn))
    except psycopg.Error as exc:
        raise SinkError(f"TimescaleDB retention run failed: {exc}") from exc
