"""Exact sliding-window rate limits: one atomic script per check, on the server's clock."""

from __future__ import annotations

from typing import NamedTuple

from tally.ingest.counting.scripts import call
from tally.keys import rate_limit_key, rate_limit_seq_key


class Decision(NamedTuple):
    """Whether a request may go ahead, how many remain, and seconds until a slot frees."""

    allowed: bool
    remaining: int
    reset_after: float


def hit(client, limit: str, subject: str, max_requests: int, window_seconds: float) -> Decision:
    """Record one request of `subject` against `limit` if it fits in the window."""
    window_ms = max(1, round(window_seconds * 1000))
    names = [rate_limit_key(limit, subject), rate_limit_seq_key(limit, subject)]
    allowed, remaining, reset_us = call(client, "ratelimit", names, [max_requests, window_ms])
    return Decision(bool(allowed), int(remaining), int(reset_us) / 1_000_000)
