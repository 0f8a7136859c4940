"""Leaderboards for scores that are not event counts (games, karma).

Order: score descending, ties broken by member ascending (byte order), and
ranks are ordinal and 1-based: every member has a distinct rank. Scores are
stored negated in one sorted set per board so Redis' own ascending order is
exactly that order (ZREVRANGE would break ties by member descending).
"""

from __future__ import annotations

import math
from hashlib import sha1
from typing import NamedTuple

from tally.errors import IdempotencyKeyReusedError, ValidationError
from tally.ingest.counting.scripts import call
from tally.keys import LEADERBOARDS, leaderboard_idempotency_key, leaderboard_key


class Entry(NamedTuple):
    """A member's 1-based rank and score."""

    rank: int
    member: str
    score: float


def _score(stored: bytes | float) -> float:
    return -float(stored) + 0.0  # + 0.0 turns -0.0 into 0.0


def _check_score(score: float) -> float:
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError("score must be a finite number")
    return float(score)


def _fingerprint(args: list) -> str:
    """What an idempotency key is bound to: the request it first applied."""
    return sha1("\n".join(map(repr, args)).encode()).hexdigest()


def update(client, board: str, member: str, score: float, *, increment: bool = False,
           capacity: int = 0, idempotency_key: str | None = None,
           remember: int = 86_400) -> Entry | None:
    """Set (or add to) a member's score; None when a bounded board did not keep it.

    With an idempotency key the first call applies and its answer is kept
    for `remember` seconds: a repeat of the same request (a retry after a
    lost answer) returns that answer and changes nothing; another request
    with the same key raises IdempotencyKeyReusedError.
    """
    args = ["incr" if increment else "set", member, _check_score(score), capacity]
    names = [leaderboard_key(board)]
    if idempotency_key is not None:
        names.append(leaderboard_idempotency_key(board, idempotency_key))
        args += [_fingerprint(args), remember]
    field = "delta" if increment else "score"
    refusals = {
        "TALLY_SCORE_RANGE": lambda text: ValidationError([(None, field, text)]),
        "TALLY_IDEMPOTENCY": IdempotencyKeyReusedError,
    }
    # The registry lets the exporter find boards without scanning the keyspace.
    stored, rank = call(client, "leaderboard_update", names, args,
                        prelude=[("SADD", LEADERBOARDS, board)], refusals=refusals)
    return None if stored is None else Entry(rank + 1, member, _score(stored))


def _entries(rows, first_rank: int) -> list[Entry]:
    return [Entry(first_rank + i, m.decode(), _score(s)) for i, (m, s) in enumerate(rows)]


def top(client, board: str, k: int) -> list[Entry]:
    """The best k members with their scores."""
    return _entries(client.zrange(leaderboard_key(board), 0, k - 1, withscores=True), 1)


def entry(client, board: str, member: str) -> Entry | None:
    """A member's rank and score, or None if absent."""
    pipe = client.pipeline(transaction=False)
    pipe.zrank(leaderboard_key(board), member)
    pipe.zscore(leaderboard_key(board), member)
    rank, stored = pipe.execute()
    return None if rank is None else Entry(rank + 1, member, _score(stored))


def around(client, board: str, member: str, radius: int) -> list[Entry]:
    """The member and up to `radius` members on each side of it; [] if absent."""
    rank = client.zrank(leaderboard_key(board), member)
    if rank is None:
        return []
    start = max(0, rank - radius)
    rows = client.zrange(leaderboard_key(board), start, rank + radius, withscores=True)
    return _entries(rows, start + 1)


def remove(client, board: str, member: str) -> bool:
    """Remove a member; True if it was there."""
    return bool(client.zrem(leaderboard_key(board), member))


def size(client, board: str) -> int:
    """Number of members on a board."""
    return client.zcard(leaderboard_key(board))
