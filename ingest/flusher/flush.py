"""One flush run for one sink: recover, then take → read → write rounds under one lease, release.

Marks leave Redis only after the sink stored their absolute values: every
round of a run takes into the same leased in-flight sets, and they are
released once after the last write of the run (for InfluxDB, after the
counter totals). A failed write puts them all back; a killed process leaves
them leased until recovery. The sink writes round k in a worker thread while
this thread takes and reads round k + 1 (the database works while Python
reads Redis); writes stay one at a time and in order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import redis

from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import featured, handoff, lock, reader
from tally.ingest.flusher.sink import BucketRow, Sink

log = logging.getLogger(__name__)
MAX_ROUNDS = 200  # bound one run so a flood of new marks cannot starve the other sink


class RunResult(NamedTuple):
    """What one run did."""

    marks: int
    rows: int
    recovered: int
    elsewhere: bool = False  # another flusher held the sink's lock: nothing was done


def _noop(point: str) -> None:
    """No checkpoint hook."""


class _Run:
    """State of one run: its token, the shards it holds marks in, and its per-sink selection."""

    def __init__(self, client, config: CountingConfig, sink: Sink, shards, settings, checkpoint,
                 token: str):
        self.client, self.config, self.sink, self.shards = client, config, sink, shards
        self.settings, self.checkpoint, self.token = settings, checkpoint, token
        self.per_shard = max(1, math.ceil(settings.flush_batch_size / max(1, len(shards))))
        self.touched: set[handoff.Shard] = set()
        self.featured = (featured.FeaturedRun(client, config, frozenset(settings.influx_keys),
                                              settings.influx_top_n)
                         if sink.per_key == "featured" else None)

    def take_and_read(self) -> tuple[int, list[BucketRow]]:
        """Take one batch of marks into the run's lease and read their rows; (marks, rows)."""
        lease = self.settings.flush_lease_seconds
        lock.renew(self.client, self.sink.name, self.token, lease)
        deadline = time.time() + lease
        marks = handoff.take(self.client, self.shards, self.sink.name, self.token,
                             self.per_shard, deadline)
        if not marks:
            return 0, []
        self.touched.update(m.shard for m in marks)
        self.checkpoint(f"taken:{self.sink.name}")
        wanted = reader.cells(marks)
        if self.featured is None:
            rows = reader.read_cells(self.client, self.config, wanted)
        else:
            rows = self.featured.select(wanted)
        self.checkpoint(f"read:{self.sink.name}")
        return len(marks), rows

    def written(self, pending: Future | None) -> int:
        """Wait for a write started earlier (re-raising its error); return its row count."""
        if pending is None:
            return 0
        count = pending.result()
        self.checkpoint(f"written:{self.sink.name}")
        return count

    def rounds(self, writer: ThreadPoolExecutor) -> tuple[int, int]:
        """Take, read and write rounds until drained, the write of one overlapping the next read."""
        total_marks = total_rows = 0
        pending = None
        for _ in range(MAX_ROUNDS):
            marks, rows = self.take_and_read()
            if not marks:
                break
            total_rows += self.written(pending)
            pending = writer.submit(self.sink.write, rows)
            total_marks += marks
        return total_marks, total_rows + self.written(pending)

    def finish(self) -> int:
        """Write what is due once per run (InfluxDB counter totals); return rows written."""
        if self.featured is None or not self.touched:
            return 0
        written = self.sink.write(self.featured.totals())
        self.checkpoint(f"written:{self.sink.name}")
        return written


def flush_sink(client, config: CountingConfig, sink: Sink, settings,
               checkpoint: Callable[[str], None] = _noop) -> RunResult:
    """Recover expired leases, then flush rounds until the sink's dirty sets are empty.

    Runs only while holding the sink's lock; when another flusher holds it,
    returns at once having done nothing (it will flush these marks).
    """
    token = handoff.new_token()
    if not lock.acquire(client, sink.name, token, settings.flush_lease_seconds):
        return RunResult(0, 0, 0, elsewhere=True)
    try:
        return _locked_run(client, config, sink, settings, checkpoint, token)
    finally:
        lock.release(client, sink.name, token)


def _locked_run(client, config: CountingConfig, sink: Sink, settings, checkpoint,
                token: str) -> RunResult:
    shards = handoff.discover(client, config.shards)
    recovered = handoff.recover(client, shards, sink.name, time.time())
    run = _Run(client, config, sink, shards, settings, checkpoint, token)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix=f"flush-{sink.name}") as writer:
            total_marks, total_rows = run.rounds(writer)
        total_rows += run.finish()
    except BaseException:
        try:
            # Every shard: a take that failed midway may have moved marks the run never saw.
            handoff.restore(client, shards, sink.name, run.token)
        except redis.RedisError as exc:  # the lease expires and recovery returns them
            log.warning("could not return marks to dirty (%s); lease %s will expire",
                        exc, run.token)
        raise
    if run.touched:
        handoff.release(client, sorted(run.touched), sink.name, run.token)
        checkpoint(f"released:{sink.name}")
    return RunResult(total_marks, total_rows, recovered)
