"""The batch step: apply validated events to Redis in one script call per hash tag group.

On a single Redis the whole batch is one EVALSHA, so it applies atomically.
On a Redis Cluster the events are grouped by hash tag (counter shard) and
each group's call is atomic; the groups go out in one round trip. Either way
a batch costs one round trip once the script is loaded.

A batch that is not counted raises one of Tally's errors, which says what
happened to it: refused before any write (`CountOverflowError`,
`RedisStateError`, `ScriptError`, `NotAppliedError`: nothing applied),
`OutcomeUnknownError` (sent, no answer: it may have been applied), or on a
cluster `PartiallyAppliedError` (some tags counted, others refused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import NamedTuple

from redis.cluster import RedisCluster

from tally import keys
from tally.errors import (
    CountOverflowError,
    EventLogFullError,
    PartiallyAppliedError,
    TallyError,
)
from tally.events import Event
from tally.ingest.counting import backpressure, plan
from tally.ingest.counting.config import CountingConfig
from tally.ingest.counting.delivery import Lost, failed
from tally.ingest.counting.scripts import call_many, error_of

# apply.lua's own refusals
REFUSALS = {"TALLY_OVERFLOW": CountOverflowError, "TALLY_LOG_FULL": EventLogFullError}
log = logging.getLogger("tally.ingest")


class BatchResult(NamedTuple):
    """How many events of a batch counted, and how many were duplicates."""

    applied: int
    duplicates: int


def _script_args(config: CountingConfig, now: int, counters: list[str]) -> list:
    ttl_m, ttl_h, ttl_d = config.ttls
    return [now, config.dedup_mode, config.dedup_window, config.bloom_bits, config.bloom_hashes,
            ttl_m, ttl_h, ttl_d, config.viewers_ttl, config.top_capacity,
            config.event_log_max if config.event_log else 0,
            len(config.sinks), *config.sinks, keys.COUNTERS, len(counters), *counters]


def _calls(client, head: list, groups: dict[str, plan.TagGroup]) -> list[tuple[str, list]]:
    """(routing key, args) per call: one call per tag on a cluster, one call in all on one Redis."""
    if isinstance(client, RedisCluster):
        return [(tag + "stats", [*head, *plan.arguments({tag: group})])
                for tag, group in groups.items()]
    return [(next(iter(groups)) + "stats", [*head, *plan.arguments(groups)])]


def _failure(replies: list) -> TallyError:
    """The error for a batch some of whose calls failed (see the module docstring)."""
    done = [reply for reply in replies if not failed(reply)]
    accepted, duplicates = sum(r[0] for r in done), sum(r[1] for r in done)
    failures = [reply for reply in replies if failed(reply)]
    lost = [reply for reply in failures if isinstance(reply, Lost)]
    if lost:
        return error_of(lost[0])
    errors = [error_of(reply, REFUSALS) for reply in failures]
    overflow = [e for e in errors if isinstance(e, CountOverflowError)]
    if overflow:
        return CountOverflowError(str(overflow[0]), accepted, duplicates)
    if done:
        return PartiallyAppliedError(errors[0], accepted, duplicates)
    return errors[0]


def apply_batch(client, config: CountingConfig, events: Sequence[Event],
                now: float | None = None) -> BatchResult:
    """Count a batch of validated events; return applied and duplicate counts."""
    if not events:
        return BatchResult(0, 0)
    received = time.time() if now is None else now
    now = int(received)
    counters = sorted({event.counter for event in events})
    # The counter registry: written by the script itself on one Redis (so a
    # refused batch registers nothing), by a command alongside on a cluster.
    cluster = isinstance(client, RedisCluster)
    head = _script_args(config, now, [] if cluster else counters)
    groups = plan.group_by_tag(config, events, received if config.event_log else None)
    calls = _calls(client, head, groups)
    prelude = [("SADD", keys.COUNTERS, *counters)] if cluster else []
    if cluster and config.event_log:
        backpressure.check(client, groups, config.event_log_max)
    replies = call_many(client, "apply", calls, prelude=prelude)
    if cluster and config.event_log:
        for tag, reply in zip(groups, replies, strict=True):
            if not failed(reply):
                backpressure.record(client, tag, reply[3])
    if any(failed(reply) for reply in replies):
        raise _failure(replies)
    for name in (name for reply in replies for name in reply[2]):
        # Counted, but a unique-user estimate or view count is stuck on foreign data.
        log.error("Redis key %r holds data Tally cannot update (not a HyperLogLog or not a "
                  "count): it was left as it was, the rest of the batch counted; delete it to "
                  "let Tally recreate it", name.decode(errors="replace"))
    return BatchResult(sum(r[0] for r in replies), sum(r[1] for r in replies))
