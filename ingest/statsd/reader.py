"""From one line's bytes to what it does: count into a target, be refused, or be malformed.

A sample's counter, key, member and tags pass through tally.events, the one
validator of events, so a StatsD line is held to exactly the API's rules (a
tag name that is not a valid prop name makes the line malformed, never a
refused batch later). Outcomes are cached by the line's bytes: instrumented
code sends the same few lines over and over.
"""

from __future__ import annotations

from typing import NamedTuple

from tally.events import validate_event
from tally.ingest.statsd.aggregate import Target
from tally.ingest.statsd.mapping import DROPPED, Mapping
from tally.ingest.statsd.protocol import REFUSED, Malformed, Sample, counter_amount, parse_line

CACHE_LINES = 50_000
CACHE_LINE_BYTES = 1024  # longer lines are read each time: the cache stays under ~60 MB
# The event field a validation problem names -> the malformed reason it is counted as.
REASONS = {"counter": "bad_name", "key": "bad_name", "user": "bad_member"}


class Outcome(NamedTuple):
    """What a line does: action "count" (target, amount), "refused", "dropped" or "malformed"."""

    action: str
    kind: str = ""  # the StatsD type (count, refused) or the malformed reason
    name: str = ""
    target: Target | None = None
    amount: float = 0.0


class LineReader:
    """Reads lines through a Mapping, remembering the outcome of each distinct line."""

    def __init__(self, mapping: Mapping):
        self.mapping = mapping
        self.cache: dict[bytes, Outcome] = {}

    def read(self, raw: bytes) -> Outcome:
        """The outcome of one line (cached)."""
        outcome = self.cache.get(raw)
        if outcome is None:
            outcome = self._read(raw)
            if len(raw) > CACHE_LINE_BYTES:
                return outcome
            if len(self.cache) >= CACHE_LINES:
                self.cache.clear()
            self.cache[raw] = outcome
        return outcome

    def _read(self, raw: bytes) -> Outcome:
        try:
            sample = parse_line(raw)
            if sample.kind in REFUSED:
                return Outcome("refused", sample.kind, sample.name)
            target = self.mapping.map_name(sample.name)
            if target is DROPPED:
                return Outcome("dropped", sample.kind, sample.name)
            amount = counter_amount(sample) if sample.kind == "c" else 1.0
            return Outcome("count", sample.kind, sample.name,
                           _validated(sample, *target), amount)
        except Malformed as exc:
            return Outcome("malformed", str(exc))


def _validated(sample: Sample, counter: str, key: str) -> Target:
    """The target as tally.events accepts it, or Malformed naming the first problem."""
    raw = {"counter": counter, "key": key}
    user = sample.value if sample.kind == "s" else None
    if user is not None:
        raw["user"] = user
    if sample.tags:
        raw["props"] = dict(sample.tags)
    event, problems = validate_event(raw, 0.0, 0, 0)
    if problems:
        field = problems[0][0]
        raise Malformed(REASONS.get(field, "bad_tag"))
    props = tuple(sorted(event.props.items())) if event.props else ()
    return event.counter, event.key, event.user, props
