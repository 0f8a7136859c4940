"""Samples summed in memory per (counter, key, user, props), sealed into events each interval.

Counters add their rate-scaled value, which may be fractional (`x:1|c|@0.3`
adds 3.33…): a sealed event carries the integer part, and the remainder is
carried into the next interval of the same (counter, key, user, props), so
over time the count is the floor of the exact sum, never more. Sets add one
occurrence of their member (the event's user). Sealed events wait in
`pending` until the batch step takes them; a refused batch stays and is
retried. Memory is bounded by `max_pending`: events sealed or being summed;
past it a sample of a new (counter, key, user, props) is dropped and counted.
"""

from __future__ import annotations

import math
import secrets
from collections import deque

from tally.events import MAX_VALUE, Event

# (counter, key, user or None, props as sorted (name, value) pairs)
Target = tuple[str, str, str | None, tuple[tuple[str, str], ...]]
EPSILON = 1e-6  # float sums of scaled rates: 3 × (1 / 0.3) is 10.000000000000002


class Aggregate:
    """The running sums, carried remainders and sealed events of one listener."""

    def __init__(self, max_pending: int, chunk: int, event_ids: bool = True):
        self.max_pending, self.chunk, self.event_ids = max_pending, chunk, event_ids
        self.sums: dict[Target, float] = {}
        self.remainders: dict[Target, float] = {}
        self.pending: deque[list[Event]] = deque()
        self.pending_events = 0
        self.remainders_dropped = 0
        self._boot, self._seq = secrets.token_hex(6), 0

    def add(self, target: Target, amount: float) -> bool:
        """Add to a running sum; False when the target is new and memory is full (dropped)."""
        sums = self.sums
        if target in sums:
            sums[target] += amount
            return True
        if len(sums) + self.pending_events >= self.max_pending:
            return False
        sums[target] = amount
        return True

    def seal(self, now: float) -> int:
        """Turn the running sums into events at second `now`, queued in chunks; return how many."""
        sums, self.sums = self.sums, {}
        events = [event for target, amount in sums.items()
                  for event in self._events(target, amount, int(now))]
        for start in range(0, len(events), self.chunk):
            self.pending.append(events[start:start + self.chunk])
        self.pending_events += len(events)
        return len(events)

    def _events(self, target: Target, amount: float, ts: int) -> list[Event]:
        total = amount + self.remainders.pop(target, 0.0)
        whole = math.floor(total + EPSILON)
        remainder = total - whole
        if remainder > EPSILON:
            if len(self.remainders) < self.max_pending:
                self.remainders[target] = remainder
            else:
                self.remainders_dropped += 1
        events = []
        counter, key, user, props = target
        while whole > 0:  # a sum past MAX_VALUE goes as several events
            value = min(whole, MAX_VALUE)
            events.append(Event(counter, key, ts, value, self._next_id(), user,
                                dict(props) if props else None))
            whole -= value
        return events

    def _next_id(self) -> str | None:
        """An id per sealed event, so a retry after an unknown outcome counts it once."""
        if not self.event_ids:
            return None
        self._seq += 1
        return f"statsd-{self._boot}-{self._seq:x}"

    def done(self) -> list[Event]:
        """Drop the oldest chunk (applied, or given up) and return it."""
        chunk = self.pending.popleft()
        self.pending_events -= len(chunk)
        return chunk
