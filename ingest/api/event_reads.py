"""Exact range reads from the raw event log (`events`): distinct users and breakdowns.

The speed layer keeps unique users only as per-bucket HyperLogLogs that cannot
be merged exactly and expire with their keys, and it never counts event
properties. The log keeps every counted event once (TALLY_EVENTS_RETENTION
days), so any range is answered exactly with one set-based statement. Each
read runs in its own short connection with a statement_timeout
(TALLY_RANGE_READ_TIMEOUT), so a heavy range cannot hold a database
connection or a worker for long; a database that is down or too slow is a
503 with Retry-After, never a wrong answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import errors, sql

from tally.ingest.api.problems import Problem

RETRY_AFTER = 10  # seconds a client waits after the database failed or timed out
log = logging.getLogger("tally.ingest")


@dataclass(frozen=True)
class Span:
    """Events of one counter (one key, or all keys when key is None) with ts in [start, end)."""

    counter: str
    key: str | None
    start: float
    end: float


@dataclass(frozen=True)
class Group:
    """One breakdown row: a property value (None: events without it), its count and users."""

    value: str | None
    count: int
    uniques: int


@dataclass(frozen=True)
class Breakdown:
    """The top groups by count, and the rest summed: how many values, their count and users."""

    top: list[Group]
    other_values: int
    other_count: int
    other_uniques: int


def _where(span: Span) -> tuple[sql.Composable, list]:
    """The filter of a span; the key condition only when a key is given, so the planner
    uses events_counter_key_ts for one key and events_counter_ts for the whole counter."""
    clauses = [sql.SQL("counter = %s"), sql.SQL("ts >= to_timestamp(%s)"),
               sql.SQL("ts < to_timestamp(%s)")]
    args: list = [span.counter, span.start, span.end]
    if span.key is not None:
        clauses.append(sql.SQL("key = %s"))
        args.append(span.key)
    return sql.SQL(" AND ").join(clauses), args


# Distinct users as groups, not count(DISTINCT): PostgreSQL's count(DISTINCT) sorts the
# whole range in one process, a GROUP BY "user" hashes it with parallel workers (about
# twice as fast over 30 days of events: bench/README.md, "Range reads"). The group of
# user-less events (user NULL) counts in the sums, not in the users.
UNIQUES = sql.SQL('''SELECT count("user"), coalesce(sum(value), 0), coalesce(sum(n), 0)
FROM (SELECT "user", sum(value) AS value, count(*) AS n FROM events WHERE {}
      GROUP BY "user") AS per_user''')

# One scan of the span (materialized), grouped by the property's value; the top k
# groups by count (ties by value, events without the property last) and one pass over
# the remaining events for the rest's exact distinct users.
BREAKDOWN = sql.SQL("""
WITH e AS MATERIALIZED (
    SELECT props ->> %s AS v, value, "user" FROM events WHERE {where}
), g AS (
    SELECT v, sum(value) AS count, count(DISTINCT "user") AS uniques,
           row_number() OVER (ORDER BY sum(value) DESC, v NULLS LAST) AS rank
    FROM e GROUP BY v
), top AS (
    SELECT v FROM g WHERE rank <= %s
)
SELECT rank, v, count, uniques FROM g WHERE rank <= %s
UNION ALL
SELECT 0, NULL, coalesce(sum(e.value), 0), count(DISTINCT e."user") FROM e
WHERE CASE WHEN e.v IS NULL THEN NOT EXISTS (SELECT 1 FROM top WHERE top.v IS NULL)
           ELSE e.v NOT IN (SELECT top.v FROM top WHERE top.v IS NOT NULL) END
UNION ALL
SELECT -1, NULL, count(*), 0 FROM g WHERE rank > %s
ORDER BY 1
""")


class EventReads:
    """Reads of `events` over a span, each in its own connection with a statement timeout."""

    def __init__(self, dsn: str, timeout: float):
        self.dsn, self.timeout = dsn, timeout

    def uniques(self, span: Span) -> tuple[int, int, int]:
        """(distinct users, sum of values, events) of the span."""
        where, args = _where(span)
        (users, value, events), = self._run(UNIQUES.format(where), args)
        return int(users), int(value), int(events)

    def breakdown(self, span: Span, prop: str, k: int) -> Breakdown:
        """The k values of props->>prop with the highest counts, and the rest summed."""
        where, args = _where(span)
        rows = self._run(BREAKDOWN.format(where=where), [prop, *args, k, k, k])
        by_rank = {rank: (v, int(c), int(u)) for rank, v, c, u in rows if rank <= 0}
        top = [Group(v, int(c), int(u)) for rank, v, c, u in rows if rank > 0]
        _, other_count, other_uniques = by_rank[0]
        return Breakdown(top, by_rank[-1][1], other_count, other_uniques)

    def _run(self, statement: sql.Composable, args: list) -> list[tuple]:
        if not self.dsn:
            raise Problem(503, "event-log-unavailable", "Event log unavailable",
                          "no TimescaleDB is configured (TALLY_POSTGRES_DSN): range reads "
                          "come from its events table", headers={"Retry-After": str(RETRY_AFTER)})
        milliseconds = max(1, round(self.timeout * 1000))
        try:
            with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True,
                                 options=f"-c statement_timeout={milliseconds}") as conn:
                return conn.execute(statement, args).fetchall()
        except errors.QueryCanceled:
            raise Problem(503, "range-read-timeout", "Range read timed out",
                          f"the read took longer than TALLY_RANGE_READ_TIMEOUT "
                          f"({self.timeout:g} s): narrow from/to, or retry later",
                          headers={"Retry-After": str(RETRY_AFTER)}) from None
        except psycopg.Error as exc:
            log.warning("range read failed: %s", exc)
            raise Problem(503, "event-log-unavailable", "Event log unavailable",
                          "TimescaleDB did not answer; retry later",
                          headers={"Retry-After": str(RETRY_AFTER)}) from None
