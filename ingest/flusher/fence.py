"""Fencing tokens checked inside TimescaleDB transactions (table sink_fence, timescale/0006).

A sink lock's fence (lock.py) grows with every acquisition. A new holder
records its fence in sink_fence first (`claim`); each write transaction
records it again as its last statement before COMMIT (`check`), an upsert
that changes no row when the stored fence is larger. The row lock of that
upsert orders it against a successor's claim: either the write commits
before the successor's claim, or it sees the larger fence and rolls back.
A writer that lost its lock therefore never commits after its successor
took over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import psycopg

from tally.errors import SinkError

RECORD = """INSERT INTO sink_fence AS f (sink, fence) VALUES (%s, %s)
ON CONFLICT (sink) DO UPDATE SET fence = EXCLUDED.fence WHERE f.fence <= EXCLUDED.fence
RETURNING fence"""
STORED = "SELECT fence FROM sink_fence WHERE sink = %s"


class FencedOut(SinkError):
    """The write carried an older fence than TimescaleDB has seen: another flusher took over."""


def _noop() -> None:
    """No checkpoint hook."""


class Fence(NamedTuple):
    """A lock holder's fence for one sink row, and a test hook run just before the check."""

    sink: str
    token: int
    before_commit: Callable[[], None] = _noop


def record(cur: psycopg.Cursor, fence: Fence) -> int | None:
    """Record the fence; None when it is the newest, else the larger one stored."""
    cur.execute(RECORD, [fence.sink, fence.token])
    if cur.fetchone() is not None:
        return None
    cur.execute(STORED, [fence.sink])
    return cur.fetchone()[0]


def claim(conn: psycopg.Connection, fence: Fence) -> int | None:
    """Record a new holder's fence in its own transaction; as `record`."""
    with conn.transaction(), conn.cursor() as cur:
        return record(cur, fence)


def check(cur: psycopg.Cursor, fence: Fence | None) -> None:
    """Last statement of a write transaction: raise FencedOut (so it rolls back) if superseded.

    None = an unfenced writer (benchmarks, direct sink use without a lock).
    """
    if fence is None:
        return
    fence.before_commit()
    stored = record(cur, fence)
    if stored is not None:
        raise FencedOut(f"sink {fence.sink}: fence {fence.token} is older than {stored} in "
                        "sink_fence (another flusher took over); nothing was committed")
