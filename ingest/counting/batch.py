"""The batch step: apply validated events to Redis in one script call per hash tag group.

On a single Redis the whole batch is one EVALSHA, so it applies atomically.
On a Redis Cluster the events are grouped by hash tag (counter shard) and
each group's call is atomic; the groups go out in one pipeline.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from redis.cluster import RedisCluster

from ingest.counting import keys
from ingest.counting.config import CountingConfig
from ingest.counting.events import Event
from ingest.counting.scripts import script


class BatchResult(NamedTuple):
    """How many events of a batch counted, and how many were duplicates."""

    applied: int
    duplicates: int


def event_shard(config: CountingConfig, event: Event) -> int:
    """Shard an event goes to; a hot key's events spread by user, else id, else time."""
    spread = config.spread(event.counter, event.key)
    if spread == 1:
        return keys.key_shard(event.key, config.shards)
    # The same user always lands in the same shard, so unique views stay exact,
    # and a retried event (same user and id) meets its own dedup mark.
    discriminator = event.user or event.id or f"{time.time_ns()}"
    return keys.spread_shard(event.key, config.shards, spread, discriminator)


def _script_args(config: CountingConfig, now: int) -> list:
    ttl_m, ttl_h, ttl_d = config.ttls
    return [now, config.dedup_mode, config.dedup_window, config.bloom_bits, config.bloom_hashes,
            ttl_m, ttl_h, ttl_d, config.viewers_ttl, config.top_capacity,
            len(config.sinks), *config.sinks]


def _event_args(tag: str, event: Event) -> tuple:
    return (tag, event.key, event.id or "", event.user or "", event.value, event.ts)


def group_by_tag(config: CountingConfig, events: Iterable[Event]) -> dict[str, list]:
    """Flattened script arguments of each event, grouped by hash tag."""
    groups: dict[str, list] = defaultdict(list)
    for event in events:
        tag = keys.tag(event.counter, event_shard(config, event))
        groups[tag].extend(_event_args(tag, event))
    return groups


def apply_batch(client, config: CountingConfig, events: Sequence[Event],
                now: float | None = None) -> BatchResult:
    """Count a batch of validated events; return applied and duplicate counts."""
    if not events:
        return BatchResult(0, 0)
    now = int(time.time() if now is None else now)
    groups = group_by_tag(config, events)
    apply = script(client, "apply")
    head = _script_args(config, now)
    pipe = client.pipeline(transaction=False)
    pipe.sadd(keys.COUNTERS, *{event.counter for event in events})
    if isinstance(client, RedisCluster):
        for tag, args in groups.items():
            apply(keys=[tag + "stats"], args=head + args, client=pipe)
    else:
        every = [arg for args in groups.values() for arg in args]
        apply(keys=[next(iter(groups)) + "stats"], args=head + every, client=pipe)
    results = pipe.execute()[1:]
    return BatchResult(sum(r[0] for r in results), sum(r[1] for r in results))
