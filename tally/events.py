"""The event: Tally's one input record, and the only place that validates it.

See docs/events.md. A batch is validated as a whole: every problem of every
event is reported, and a batch with any problem is applied not at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tally.errors import ValidationError
from tally.printable import printable

COUNTER_PATTERN = re.compile(r"[a-z0-9_]{1,64}")
MAX_KEY_BYTES = 256
MAX_ID_BYTES = 128
MAX_USER_BYTES = 128
# Props: a few short descriptive texts per event, for the raw event log (docs/events.md).
MAX_PROPS = 16
MAX_PROP_BYTES = 256
# Lua (the batch step) sums in doubles: stay where every integer is exact.
MAX_VALUE = 2**53 - 1
RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)",
                     re.ASCII)  # ASCII: \d must not match other scripts' digits
FIELDS = frozenset({"counter", "key", "id", "user", "value", "ts", "props"})
# What leaving out an optional field means; JSON null never means it (an "id": null
# taken as no id would count every retry of the event).
WHEN_ABSENT = {"id": "an event without id", "user": "an event without user",
               "value": "the value 1", "ts": "the time of arrival",
               "props": "an event without props"}


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event; `ts` is whole epoch seconds (UTC)."""

    counter: str
    key: str
    ts: int
    value: int = 1
    id: str | None = None
    user: str | None = None
    props: Mapping[str, str] | None = None  # kept in the event log, not counted


class _Problems(ValueError):
    """Several (field, message) problems of one field: props name their entries."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__(problems)
        self.problems = problems


def _text(raw: Mapping, name: str, limit: int, required: bool) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise ValueError("is required")
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return _checked_text(value, limit)


def _checked_text(value: str, limit: int) -> str:
    """The rule every free text follows: 1 to `limit` bytes of printable UTF-8."""
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise ValueError(f"must be at most {limit} bytes of UTF-8")
    if not printable(value):
        raise ValueError("must be printable UTF-8 (no control characters)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 (no lone surrogates)") from None
    return value


# A prop value of another JSON type: the hint says how to send it as text.
_NOT_TEXT = [(bool, "must be a string (props values are text; send booleans as strings)"),
             (int | float, "must be a string (props values are text; send numbers as strings)"),
             (object, "must be a string (props values are text, not lists or objects)")]


def _prop_value(value: object) -> str:
    if value is None:
        raise ValueError("must not be null; leave the entry out for no value")
    if not isinstance(value, str):
        raise ValueError(next(message for kind, message in _NOT_TEXT if isinstance(value, kind)))
    return _checked_text(value, MAX_PROP_BYTES)


def _shown(name: str) -> str:
    """A prop name as a message quotes it: escaped, and a long one cut (it is wrong anyway)."""
    return repr(name if len(name) <= 80 else name[:64] + "…")


def _props(raw: Mapping) -> dict[str, str] | None:
    """The props as a plain dict (None for `{}`); every bad entry is its own problem."""
    props = raw.get("props")
    if props is None:
        return None
    if not isinstance(props, Mapping):
        raise ValueError("must be a JSON object of names to text values")
    if len(props) > MAX_PROPS:
        raise ValueError(f"must have at most {MAX_PROPS} entries, not {len(props)}")
    problems = []
    for name, value in props.items():
        if not (isinstance(name, str) and COUNTER_PATTERN.fullmatch(name)):
            problems.append(("props", f"name {_shown(name)} must match [a-z0-9_]{{1,64}}"))
            continue
        try:
            _prop_value(value)
        except ValueError as exc:
            problems.append((f"props.{name}", str(exc)))
    if problems:
        raise _Problems(problems)
    return dict(props) or None


def _counter(raw: Mapping) -> str:
    value = raw.get("counter")
    if value is None:
        raise ValueError("is required")
    if not isinstance(value, str) or not COUNTER_PATTERN.fullmatch(value):
        raise ValueError("must match [a-z0-9_]{1,64}")
    return value


def _value(raw: Mapping) -> int:
    value = raw.get("value", 1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a positive integer")
    if not 1 <= value <= MAX_VALUE:
        raise ValueError(f"must be between 1 and {MAX_VALUE}")
    return value


def parse_timestamp(value: object) -> float:
    """Read an RFC 3339 string or epoch seconds (int or float) as epoch seconds."""
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch seconds")
    if isinstance(value, int | float):
        try:
            seconds = float(value)  # an int past the double range raises OverflowError
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ValueError("must be a finite number of epoch seconds")
        return seconds
    if isinstance(value, str):
        text = value.strip()
        if not RFC3339.fullmatch(text):
            raise ValueError("must be RFC 3339 with a time zone, e.g. 2026-11-28T10:15:03Z")
        try:
            return datetime.fromisoformat(text.replace("z", "Z")).timestamp()
        except ValueError:
            raise ValueError("is not a valid date and time") from None
    raise ValueError("must be an RFC 3339 string or epoch seconds")


def _ts(raw: Mapping, now: float, lateness: int, skew: int) -> int:
    if raw.get("ts") is None:
        return int(now)
    ts = parse_timestamp(raw["ts"])
    if ts < now - lateness:
        raise ValueError(f"is older than the accepted lateness of {lateness} s")
    if ts > now + skew:
        raise ValueError(f"is more than {skew} s in the future (allowed clock skew)")
    return math.floor(ts)


def validate_event(raw: object, now: float, lateness: int, skew: int) -> tuple[Event | None, list]:
    """Return (event, []) or (None, [(field, message), ...]) for one raw JSON value."""
    if not isinstance(raw, Mapping):
        return None, [("", "event must be a JSON object")]
    problems = [(name, "is not a known field") for name in raw if name not in FIELDS]
    parsed = {}
    checks = {
        "counter": _counter,
        "key": lambda r: _text(r, "key", MAX_KEY_BYTES, True),
        "id": lambda r: _text(r, "id", MAX_ID_BYTES, False),
        "user": lambda r: _text(r, "user", MAX_USER_BYTES, False),
        "value": _value,
        "ts": lambda r: _ts(r, now, lateness, skew),
        "props": _props,
    }
    for name, check in checks.items():
        if name in raw and raw[name] is None:
            absent = WHEN_ABSENT.get(name)
            problems.append((name, f"must not be null; leave the field out for {absent}"
                             if absent else "must not be null"))
            continue
        try:
            parsed[name] = check(raw)
        except _Problems as exc:
            problems.extend(exc.problems)
        except ValueError as exc:
            problems.append((name, str(exc)))
    if problems:
        return None, problems
    return Event(**parsed), []


class InvalidBatch(ValidationError):
    """A batch with `invalid` bad events out of `total`; `problems` lists at most MAX_PROBLEMS."""

    def __init__(self, problems: list, invalid: int, total: int, complete: bool):
        super().__init__(problems)
        self.invalid, self.total, self.all_listed = invalid, total, complete


# Enough to show a client its mistakes; a listing of every one could be larger than the body.
MAX_PROBLEMS = 100


def validate_batch(raws: Iterable[object], now: float, lateness: int, skew: int) -> list[Event]:
    """Validate every event; raise InvalidBatch listing the problems, or return the events.

    Raw events are taken one at a time and dropped once checked, so `raws` may
    parse them lazily: memory holds the valid events, not the raw ones.
    """
    events, problems, invalid, total, complete = [], [], 0, 0, True
    for total, raw in enumerate(raws, 1):
        event, errors = validate_event(raw, now, lateness, skew)
        if errors:
            invalid += 1
            room = MAX_PROBLEMS - len(problems)
            complete = complete and len(errors) <= room
            problems.extend((total - 1, name, message) for name, message in errors[:room])
        elif not invalid:
            events.append(event)
    if invalid:
        raise InvalidBatch(problems, invalid, total, complete)
    return events
