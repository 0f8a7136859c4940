"""One flush run for one sink: take the lock, reclaim, then take → read → write rounds, release.

Marks leave Redis only after the sink stored their absolute values: every
round of a run takes into the same leased in-flight sets, and they are
released once after the last write of the run (for InfluxDB, after the
counter totals). A failed write puts them all back. The sink writes round k
in a worker thread while this thread takes and reads round k + 1 (the
database works while Python reads Redis); writes stay one at a time and in
order.

Takeover: a run starts by taking the sink's lock (lock.py), recording its
fence in the sink, and reclaiming every in-flight mark the sink still has:
only a lock holder takes marks, so they belong to a holder that died or lost
the lock, and need not wait for their lease. Fencing: each write is
preceded and followed by a lock check; a write that landed after another
flusher took over re-marks its buckets dirty, so the new holder writes them
again from newer values (docs/flusher.md, "Takeover and fencing").
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
from tally.ingest.flusher import featured, fence, handoff, lock, reader, sealed
from tally.ingest.flusher.sink import BucketRow, Sink

log = logging.getLogger(__name__)
MAX_ROUNDS = 200  # bound one run so a flood of new marks cannot starve the other sink


class RunResult(NamedTuple):
    """What one run did."""

    marks: int
    rows: int
    recovered: int
    elsewhere: bool = False  # another flusher held the sink's lock: nothing was done
    retry_in: float | None = None  # elsewhere: seconds until the holder's lock runs out


def _noop(point: str) -> None:
    """No checkpoint hook."""


class _Run:
    """State of one run: its lock, the shards it holds marks in, and its per-sink selection."""

    def __init__(self, client, config: CountingConfig, sink: Sink, shards, settings, checkpoint,
                 held: lock.Lease):
        self.client, self.config, self.sink, self.shards = client, config, sink, shards
        self.settings, self.checkpoint, self.held = settings, checkpoint, held
        self.token = held.owner
        self.per_shard = max(1, math.ceil(settings.flush_batch_size / max(1, len(shards))))
        self.touched: set[handoff.Shard] = set()
        self.featured = (featured.FeaturedRun(client, config, frozenset(settings.influx_keys),
                                              settings.influx_top_n)
                         if sink.per_key == "featured" else None)
        # One mark per (shard, minute) the run took: what re-marking the counter
        # totals needs (a mark stands for its minute's, hour's and day's buckets).
        self.per_minute: dict[tuple[handoff.Shard, int], handoff.Mark] = {}
        self.sealed = sealed.shared(settings)  # rows of sealed days are final

    def take_and_read(self) -> tuple[list[handoff.Mark], list[BucketRow]]:
        """Take one batch of marks into the run's lease and read their rows; (marks, rows)."""
        lease = self.settings.flush_lease_seconds
        self.held.verify()
        deadline = time.time() + lease
        marks = handoff.take(self.client, self.shards, self.sink.name, self.token,
                             self.per_shard, deadline)
        if not marks:
            return [], []
        self.touched.update(m.shard for m in marks)
        if self.featured is not None:
            for mark in marks:
                self.per_minute.setdefault((mark.shard, mark.minute), mark)
        self.checkpoint(f"taken:{self.sink.name}")
        wanted = reader.cells(marks)
        if self.featured is None:
            rows = reader.read_cells(self.client, self.config, wanted)
        else:
            rows = self.featured.select(wanted)
        self.checkpoint(f"read:{self.sink.name}")
        return marks, rows

    def fenced_write(self, rows: list[BucketRow], marks) -> int:
        """Write rows only while holding the lock; re-mark them if it was taken meanwhile.

        The check before keeps a flusher that lost the lock from writing at
        all. The check after catches a write that started before another
        flusher took over and landed after it: in InfluxDB it may have
        replaced the new holder's newer values, so its marks go back to dirty
        and the holder writes them again (TimescaleDB refused it anyway:
        fence.py).
        """
        self.held.verify()
        self.checkpoint(f"verified:{self.sink.name}")
        if self.sealed is not None:
            rows = self.sealed.unsealed(rows)
        count = self.sink.write(rows)
        try:
            self.held.verify()
        except lock.LockLost:
            remarked = handoff.remark(self.client, self.sink.name, marks)
            log.warning("lock of sink %s taken during a write; %d marks re-marked dirty",
                        self.sink.name, remarked)
            raise
        return count

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
            pending = writer.submit(self.fenced_write, rows, marks)
            total_marks += len(marks)
        return total_marks, total_rows + self.written(pending)

    def finish(self) -> int:
        """Write what is due once per run (InfluxDB counter totals); return rows written."""
        if self.featured is None or not self.touched:
            return 0
        written = self.fenced_write(self.featured.totals(), list(self.per_minute.values()))
        self.checkpoint(f"written:{self.sink.name}")
        return written


def flush_sink(client, config: CountingConfig, sink: Sink, settings,
               checkpoint: Callable[[str], None] = _noop) -> RunResult:
    """Take the lock, reclaim in-flight marks, then flush rounds until the dirty sets are empty.

    Runs only while holding the sink's lock; when another flusher holds it,
    returns at once having done nothing (it will flush these marks).
    """
    held = lock.acquire(client, sink.name, handoff.new_token(), settings.flush_lock_seconds)
    if isinstance(held, lock.Busy):
        return RunResult(0, 0, 0, elsewhere=True, retry_in=held.retry_in)
    with held:
        claim(sink, held, checkpoint)
        return _locked_run(client, config, sink, settings, checkpoint, held)


def claim(sink, held: lock.Lease, checkpoint: Callable[[str], None]) -> None:
    """Record the lease's fence in the sink, first raising it above one the sink kept."""
    for _ in range(3):
        stored = sink.claim(fence.Fence(sink.name, held.fence,
                                        lambda: checkpoint(f"committing:{sink.name}")))
        if stored is None:
            return
        log.info("sink %s holds fence %d from before; raising this lease's %d above it",
                 sink.name, stored, held.fence)
        held.raise_above(stored)
    raise lock.LockLost(f"sink {sink.name} kept refusing this flusher's fence {held.fence}")


def _locked_run(client, config: CountingConfig, sink: Sink, settings, checkpoint,
                held: lock.Lease) -> RunResult:
    shards = handoff.discover(client, config.shards)
    # Holding the lock, every in-flight mark is a lost holder's: reclaim them all now.
    recovered = handoff.reclaim(client, shards, sink.name)
    run = _Run(client, config, sink, shards, settings, checkpoint, held)
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
