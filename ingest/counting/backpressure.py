"""A full event log refuses a cluster batch whole, before any of its shards counts it.

On one Redis the batch step is one script call, and a full log refuses the
whole batch (TALLY_LOG_FULL, apply.lua). On a Redis Cluster each shard of a
batch is its own call: a batch over a full shard and others would count in
the others and be refused in the full one (a 500 partially-applied). So,
before a cluster batch, the process reads the backlog of the batch's shards
it has not seen lately well below the bound (one round trip), and refuses
the batch with EventLogFullError when one is full. Each call's reply tells
the backlog after it, so a busy process rarely needs the extra read.

The script's own refusal stays: it holds the bound exactly. Two batches that
pass this check at the same moment and then meet a shard that one of them
filled are the one way left to a partly applied batch; it is reported as such.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from weakref import WeakKeyDictionary

from tally import keys
from tally.errors import EventLogFullError

FRESH_SECONDS = 1.0  # how long a backlog seen below half the bound needs no new read
_LEVELS: WeakKeyDictionary = WeakKeyDictionary()  # client -> {tag: (backlog, seen at)}


def _levels(client) -> dict[str, tuple[int, float]]:
    levels = _LEVELS.get(client)
    if levels is None:
        levels = _LEVELS[client] = {}
    return levels


def record(client, tag: str, backlog: int) -> None:
    """Remember a shard log's backlog as a reply of the batch step told it."""
    _levels(client)[tag] = (backlog, time.monotonic())


def check(client, tags: Iterable[str], bound: int) -> None:
    """Raise EventLogFullError if one of these shards' logs is full; nothing is written."""
    levels, now = _levels(client), time.monotonic()
    unsure = [tag for tag in tags
              if (seen := levels.get(tag)) is None or seen[0] * 2 >= bound
              or now - seen[1] > FRESH_SECONDS]
    if not unsure:
        return
    pipe = client.pipeline(transaction=False)
    for tag in unsure:
        pipe.hget(keys.ShardKeys(tag).stats, "log_backlog")
    for tag, raw in zip(unsure, pipe.execute(), strict=True):
        backlog = int(raw or 0)
        record(client, tag, backlog)
        if backlog >= bound:
            raise EventLogFullError(
                f"the event log of {tag} holds {backlog} events not yet archived to "
                f"TimescaleDB (TALLY_EVENT_LOG_MAX is {bound})")
