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
from redis.exceptions import NoScriptError

from ingest.counting import keys, plan
from ingest.counting.config import CountingConfig
from ingest.counting.events import Event
from ingest.counting.scripts import script, source


class BatchResult(NamedTuple):
    """How many events of a batch counted, and how many were duplicates."""

    applied: int
    duplicates: int


def _script_args(config: CountingConfig, now: int) -> list:
    ttl_m, ttl_h, ttl_d = config.ttls
    return [now, config.dedup_mode, config.dedup_window, config.bloom_bits, config.bloom_hashes,
            ttl_m, ttl_h, ttl_d, config.viewers_ttl, config.top_capacity,
            len(config.sinks), *config.sinks]


def _calls(client, groups: dict[str, plan.TagGroup]) -> dict[str, list]:
    """Payload per call: one call per tag on a cluster, one call in all on one Redis."""
    if isinstance(client, RedisCluster):
        return {tag: [plan.encode({tag: group})] for tag, group in groups.items()}
    return {next(iter(groups)): [plan.encode(groups)]}


def _run(client, sha: str, head: list, calls: dict[str, list], counters: set[str]) -> list:
    # EVALSHA through execute_command: redis-py refuses Script objects and
    # evalsha() in a cluster pipeline, and its plain-pipeline script support
    # costs a SCRIPT EXISTS round trip per batch. Calls that meet NOSCRIPT
    # (first use, restart, failover) did not run, so only they are retried.
    pipe = client.pipeline(transaction=False)
    if counters:
        pipe.sadd(keys.COUNTERS, *counters)
    for tag, args in calls.items():
        pipe.execute_command("EVALSHA", sha, 1, tag + "stats", *head, *args)
    replies = pipe.execute(raise_on_error=False)[1 if counters else 0:]
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
            raise reply
    return replies


def apply_batch(client, config: CountingConfig, events: Sequence[Event],
                now: float | None = None) -> BatchResult:
    """Count a batch of validated events; return applied and duplicate counts."""
    if not events:
        return BatchResult(0, 0)
    now = int(time.time() if now is None else now)
    calls = _calls(client, plan.group_by_tag(config, events))
    head = _script_args(config, now)
    sha = script(client, "apply").sha
    replies = _run(client, sha, head, calls, {event.counter for event in events})
    missing = {tag: args for (tag, args), r in zip(calls.items(), replies, strict=True)
               if isinstance(r, NoScriptError)}
    if missing:
        client.script_load(source("apply"))
        replies = [r for r in replies if not isinstance(r, Exception)]
        replies += _run(client, sha, head, missing, set())
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return BatchResult(sum(r[0] for r in replies), sum(r[1] for r in replies))
