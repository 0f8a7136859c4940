"""The batch step: apply validated events to Redis in one script call per hash tag group.

On a single Redis the whole batch is one EVALSHA, so it applies atomically.
On a Redis Cluster the events are grouped by hash tag (counter shard) and
each group's call is atomic; the groups go out in one pipeline. Either way
a batch costs one round trip once the script is loaded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from ingest.counting import keys, plan
from ingest.counting.config import CountingConfig
from ingest.counting.events import Event
from ingest.counting.scripts import call_many
from tally.errors import CountOverflowError

OVERFLOW = "TALLY_OVERFLOW"  # prefix of apply.lua's refusal


class BatchResult(NamedTuple):
    """How many events of a batch counted, and how many were duplicates."""

    applied: int
    duplicates: int


def _script_args(config: CountingConfig, now: int) -> list:
    ttl_m, ttl_h, ttl_d = config.ttls
    return [now, config.dedup_mode, config.dedup_window, config.bloom_bits, config.bloom_hashes,
            ttl_m, ttl_h, ttl_d, config.viewers_ttl, config.top_capacity,
            len(config.sinks), *config.sinks]


def _calls(client, head: list, groups: dict[str, plan.TagGroup]) -> list[tuple[str, list]]:
    """(routing key, args) per call: one call per tag on a cluster, one call in all on one Redis."""
    if isinstance(client, RedisCluster):
        return [(tag + "stats", [*head, plan.encode({tag: group})])
                for tag, group in groups.items()]
    return [(next(iter(groups)) + "stats", [*head, plan.encode(groups)])]


def apply_batch(client, config: CountingConfig, events: Sequence[Event],
                now: float | None = None) -> BatchResult:
    """Count a batch of validated events; return applied and duplicate counts."""
    if not events:
        return BatchResult(0, 0)
    now = int(time.time() if now is None else now)
    calls = _calls(client, _script_args(config, now), plan.group_by_tag(config, events))
    registry = ("SADD", keys.COUNTERS, *{event.counter for event in events})
    try:
        replies = call_many(client, "apply", calls, prelude=[registry])
    except ResponseError as exc:
        # The script refuses before its first write (on a cluster: that tag group's call).
        if str(exc).startswith(OVERFLOW):
            raise CountOverflowError(str(exc).removeprefix(OVERFLOW).strip()) from None
        raise
    return BatchResult(sum(r[0] for r in replies), sum(r[1] for r in replies))
