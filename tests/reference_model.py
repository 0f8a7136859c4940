"""A pure-Python reference model of the counting core: what Redis should hold after a stream.

Tests apply the same events to Redis and to this model and compare every
read. Semantics mirrored from ingest/counting/lua/apply.lua and docs/counting.md:

- an event with an id counts once per (counter, key, id) inside the dedup
  window: the same id with another key is another event;
- buckets, totals and top-k sum `value`; top-k orders by count descending,
  then key ascending;
- unique views count each (user, key, UTC day) once; all-time unique views
  are the sum of the daily ones ("one view per user per key per day");
- `users` is the exact distinct-user set the HyperLogLogs approximate;
- a batch whose accepted events would carry a key's total past LIMIT is
  refused whole (`Overflow`) and changes nothing, dedup memory included. The
  script compares in doubles; tests keep sums away from LIMIT by far more
  than a double's rounding. The model knows no shards, so tests keep hot
  keys (limit / spread per shard) far below it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tally.events import Event
from tally.keys import DAY, RESOLUTIONS

Bucket = tuple[str, str, str, int]  # (counter, key, resolution, index)
LIMIT = 9_200_000_000_000_000_000  # apply.lua's LIMIT, 9.2e18


class Overflow(Exception):
    """The model refuses a batch: a key's all-time total would pass LIMIT."""


@dataclass
class ReferenceModel:
    """Exact in-memory counts for a stream of validated events."""

    dedup_window: int = DAY
    seen: dict[tuple[str, str, str], int] = field(default_factory=dict)
    buckets: dict[Bucket, int] = field(default_factory=lambda: defaultdict(int))
    totals: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    users: dict[Bucket, set[str]] = field(default_factory=lambda: defaultdict(set))
    viewers: dict[tuple[str, str, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    applied: int = 0
    duplicates: int = 0
    logged: list[Event] = field(default_factory=list)  # what the event log must hold, in order

    def _is_duplicate(self, event: Event, now: int, fresh: dict) -> bool:
        if event.id is None:
            return False
        identity = (event.counter, event.key, event.id)
        first = fresh.get(identity, self.seen.get(identity))
        if first is not None and now < first + self.dedup_window:
            return True
        fresh[identity] = now
        return False

    def apply(self, events: Iterable[Event], now: int = 0) -> tuple[int, int]:
        """Count events received at `now`; return (applied, duplicates) of this call.

        Raises Overflow, changing nothing, when a total would pass LIMIT.
        """
        fresh: dict[tuple[str, str, str], int] = {}
        counted, duplicates = [], 0
        for event in events:
            if self._is_duplicate(event, now, fresh):
                duplicates += 1
            else:
                counted.append(event)
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for event in counted:
            sums[(event.counter, event.key)] += event.value
        for (counter, key), added in sums.items():
            if self.total(counter, key) + added > LIMIT:
                raise Overflow(f"the all-time total of key {key} would pass 9.2e18")
        self.seen.update(fresh)
        for event in counted:
            self._count(event)
        self.logged.extend(counted)
        self.applied += len(counted)
        self.duplicates += duplicates
        return len(counted), duplicates

    def _count(self, event: Event) -> None:
        for resolution, seconds in RESOLUTIONS.items():
            bucket = (event.counter, event.key, resolution, event.ts // seconds)
            self.buckets[bucket] += event.value
            if event.user is not None:
                self.users[bucket].add(event.user)
        self.totals[(event.counter, event.key)] += event.value
        if event.user is not None:
            self.viewers[(event.counter, event.key, event.ts // DAY)].add(event.user)

    def bucket(self, counter: str, key: str, resolution: str, index: int) -> int:
        """Count of one (counter, key, minute/hour/day) bucket."""
        return self.buckets.get((counter, key, resolution, index), 0)

    def bucket_values(self, counter: str, key: str, resolution: str,
                      indexes: Sequence[int]) -> dict[int, int]:
        """Counts per index, like reads.bucket_values."""
        return {index: self.bucket(counter, key, resolution, index) for index in indexes}

    def total(self, counter: str, key: str) -> int:
        """All-time count of a key."""
        return self.totals.get((counter, key), 0)

    def uniques(self, counter: str, key: str, resolution: str, indexes: Sequence[int]) -> int:
        """Exact distinct users over buckets (what reads.uniques approximates)."""
        merged: set[str] = set()
        for index in indexes:
            merged |= self.users.get((counter, key, resolution, index), set())
        return len(merged)

    def unique_views(self, counter: str, key: str, day: int | None = None) -> int:
        """Distinct users of a key on a day, or the sum over all days."""
        if day is not None:
            return len(self.viewers.get((counter, key, day), ()))
        return sum(len(users) for (c, k, _), users in self.viewers.items()
                   if (c, k) == (counter, key))

    def keys(self, counter: str) -> set[str]:
        """Every key of a counter that has counted anything."""
        return {k for (c, k) in self.totals if c == counter}

    def indexes(self, counter: str, resolution: str) -> set[int]:
        """Every time index of a resolution that has counted anything for a counter."""
        return {i for (c, _, r, i) in self.buckets if c == counter and r == resolution}

    def top(self, counter: str, k: int, day: int | None = None) -> list[tuple[str, int]]:
        """Best k keys by count (a day's or all time): count descending, then key ascending."""
        if day is None:
            scores = {key: v for (c, key), v in self.totals.items() if c == counter}
        else:
            scores = {key: v for (c, key, r, i), v in self.buckets.items()
                      if c == counter and r == "d" and i == day}
        # Top sets score in doubles: above 2^53 a score is the nearest double, as in Redis.
        ranked = sorted(((key, int(float(v))) for key, v in scores.items() if v > 0),
                        key=lambda item: (-item[1], item[0]))
        return ranked[:k]


def mismatches(client, config, model: ReferenceModel, counter: str, k: int = 10) -> list:
    """Every read of tally.ingest.counting.reads that differs from the model: [] means equal."""
    from tally.ingest.counting import reads  # the model itself stays Redis-free

    found = []

    def check(what, got, want):
        if got != want:
            found.append((what, got, want))

    days = sorted(model.indexes(counter, "d"))
    for key in sorted(model.keys(counter)):
        for resolution in RESOLUTIONS:
            indexes = sorted(model.indexes(counter, resolution))
            check(("bucket", key, resolution),
                  reads.bucket_values(client, config, counter, key, resolution, indexes),
                  model.bucket_values(counter, key, resolution, indexes))
        check(("total", key), reads.total(client, config, counter, key), model.total(counter, key))
        for day in [*days, None]:
            check(("unique_views", key, day), reads.unique_views(client, config, counter, key, day),
                  model.unique_views(counter, key, day))
    for day in [*days, None]:
        check(("top", day), reads.top(client, config, counter, k, day), model.top(counter, k, day))
    return found
