"""One flush run for one sink: recover, then take → read → write → release until drained.

Marks leave Redis only after the sink stored their absolute values; a failed
write puts them back, a killed process leaves them leased until recovery.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import redis

from ingest.counting.config import CountingConfig
from tally.flusher import featured, handoff, reader
from tally.flusher.sink import Sink

log = logging.getLogger(__name__)
MAX_ROUNDS = 200  # bound one run so a flood of new marks cannot starve the other sink


class RunResult(NamedTuple):
    """What one run did."""

    marks: int
    rows: int
    recovered: int


def _noop(point: str) -> None:
    """No checkpoint hook."""


def flush_round(client, config: CountingConfig, sink: Sink, shards, settings,
                checkpoint: Callable[[str], None] = _noop) -> tuple[int, int]:
    """Take one batch of marks, write their absolute values, release; return (marks, rows)."""
    token = handoff.new_token()
    per_shard = max(1, math.ceil(settings.flush_batch_size / max(1, len(shards))))
    deadline = time.time() + settings.flush_lease_seconds
    marks = handoff.take(client, shards, sink.name, token, per_shard, deadline)
    if not marks:
        return 0, 0
    touched = sorted({m.shard for m in marks})
    checkpoint(f"taken:{sink.name}")
    try:
        rows = reader.read_cells(client, config, reader.cells(marks))
        if sink.per_key == "featured":
            rows = featured.select(client, config, rows, frozenset(settings.influx_keys),
                                   settings.influx_top_n)
        checkpoint(f"read:{sink.name}")
        written = sink.write(rows)
        checkpoint(f"written:{sink.name}")
    except BaseException:
        try:
            handoff.restore(client, touched, sink.name, token)
        except redis.RedisError as exc:  # the lease expires and recovery returns them
            log.warning("could not return marks to dirty (%s); lease %s will expire", exc, token)
        raise
    handoff.release(client, touched, sink.name, token)
    checkpoint(f"released:{sink.name}")
    return len(marks), written


def flush_sink(client, config: CountingConfig, sink: Sink, settings,
               checkpoint: Callable[[str], None] = _noop) -> RunResult:
    """Recover expired leases, then flush rounds until the sink's dirty sets are empty."""
    shards = handoff.discover(client, config.shards)
    recovered = handoff.recover(client, shards, sink.name, time.time())
    total_marks = total_rows = 0
    for _ in range(MAX_ROUNDS):
        marks, rows = flush_round(client, config, sink, shards, settings, checkpoint)
        total_marks, total_rows = total_marks + marks, total_rows + rows
        if not marks:
            break
    return RunResult(total_marks, total_rows, recovered)
