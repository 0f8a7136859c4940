"""One StatsD line as Tally reads it: `name:value|type[|@rate][|#tag:value,...]`.

Only the syntax lives here; what a sample counts into (mapping, validation
through tally.events) is the listener's business. A line Tally cannot read
raises Malformed, whose message is a short reason (a metric label value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COUNTED = ("c", "s")
# Types Tally refuses: it counts events, and these are not counts of anything.
REFUSED = {"g": "gauge", "ms": "timer", "h": "histogram", "d": "distribution"}
NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
MAX_LINE_BYTES = 8192  # longer than any sane metric; a TCP client without newlines is cut here


class Malformed(ValueError):
    """A line Tally cannot read; str() is the reason, e.g. "bad_rate"."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric of a line, still as text: `value` is a number (c) or a member (s)."""

    name: str
    kind: str
    value: str
    rate: float = 1.0
    tags: tuple[tuple[str, str], ...] = ()


def parse_line(raw: bytes) -> Sample:
    """Read one line (without its newline); raise Malformed naming what is wrong."""
    if len(raw) > MAX_LINE_BYTES:
        raise Malformed("too_long")
    try:
        text = raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError:
        raise Malformed("not_utf8") from None
    name, colon, rest = text.partition(":")
    if not colon or not name:
        raise Malformed("no_value")
    value, bar, rest = rest.partition("|")
    if not bar:
        raise Malformed("no_type")
    kind, *extra = rest.split("|")
    if kind not in COUNTED and kind not in REFUSED:
        raise Malformed("bad_type")
    rate, tags = 1.0, ()
    for field in extra:
        if field.startswith("@") and rate == 1.0:
            rate = _rate(field[1:])
        elif field.startswith("#") and not tags:
            tags = _tags(field[1:])
        else:
            raise Malformed("bad_field")
    return Sample(name, kind, value, rate, tags)


def _rate(text: str) -> float:
    """A sample rate: a number in (0, 1]."""
    if not NUMBER.fullmatch(text) or not 0 < float(text) <= 1:
        raise Malformed("bad_rate")
    return float(text)


def _tags(text: str) -> tuple[tuple[str, str], ...]:
    """DogStatsD tags `k:v,k2:v2`; a bare tag `k` means `k:true`, a name given twice is refused."""
    pairs = []
    for tag in text.split(","):
        name, colon, value = tag.partition(":")
        pairs.append((name, value if colon else "true"))
    if len({name for name, _ in pairs}) != len(pairs):
        raise Malformed("bad_tag")
    return tuple(pairs)


def counter_amount(sample: Sample) -> float:
    """How much a counter sample adds: its value scaled up by its sample rate, as StatsD does."""
    if sample.value.startswith("-"):
        raise Malformed("negative")
    if not NUMBER.fullmatch(sample.value):
        raise Malformed("bad_value")
    return float(sample.value) / sample.rate
