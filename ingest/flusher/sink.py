"""The Sink protocol and the bucket values every sink receives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from tally.keys import RESOLUTIONS


class BucketRow(NamedTuple):
    """Absolute count of one (counter, key) in one minute/hour/day; key None = counter total."""

    resolution: str  # "m", "h" or "d"
    counter: str
    key: str | None
    index: int  # minute/hour/day index: bucket start = index * seconds
    value: int
    uniques: int | None

    @property
    def start(self) -> int:
        """Bucket start in epoch seconds."""
        return self.index * RESOLUTIONS[self.resolution]


class Sink(Protocol):
    """A time-series store that accepts absolute bucket values; writes must be idempotent."""

    name: str
    #: "all" = every per-key row; "featured" = allowlisted/top-N keys plus counter totals.
    per_key: str
    #: Rows this store cannot hold (InfluxDB 1.x tag limits), counted since start, never silent.
    skipped_total: int

    def claim(self, held) -> int | None:
        """Record the lock holder's fence.Fence before writing under it.

        None when accepted; else the larger fence the store already holds
        (Redis lost the lock's hash), which the holder must first raise above.
        Stores without transactions accept and rely on flush.py's lock checks.
        """

    def write(self, rows: Sequence[BucketRow]) -> int:
        """Store rows (absolute values, never lowering a stored one); raise SinkError on failure."""

    def close(self) -> None:
        """Release connections."""
