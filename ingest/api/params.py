"""Query-string and path parameters, validated with precise 400s.

Free text (keys, members, subjects) travels in the query string or body,
never in the path, so slashes, `?` or any UTF-8 in it cannot change a route.
Its rules are the event schema's own rules for `key` (one owner: events.py).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from urllib.parse import unquote_to_bytes

from flask import request

from tally.events import parse_timestamp, validate_event
from tally.ingest.api.openapi import query_names
from tally.ingest.api.problems import bad_request

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
PROP_PATTERN = re.compile(r"[a-z0-9_]{1,64}")  # event property names (events.py)
MAX_EPOCH = 253_402_214_400  # 9999-12-31T00:00:00Z
EPOCH_PATTERN = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,9})?")


def reject_unknown_query() -> None:
    """400 for query parameters the OpenAPI document does not list (typos fail loudly)."""
    if request.url_rule is None or not request.args:
        return
    try:  # Werkzeug keeps undecodable escapes as literal text ("%FF"): a different key
        unquote_to_bytes(request.query_string).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"query string is not valid UTF-8 once percent-decoded (byte "
                          f"{exc.start})", "invalid-parameter") from None
    allowed = query_names(request.url_rule.rule, request.method)
    unknown = sorted(set(request.args) - (allowed or frozenset()))
    if allowed is not None and unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(map(repr, unknown))}",
                          "unknown-parameter")


def invalid(name: str, message: str):
    return bad_request(f"{name} {message}", "invalid-parameter")


def text_value(name: str, value: object) -> str:
    """Check free text (key, member, subject) by the event schema's rules for `key`."""
    raw = {"counter": "x"} if value is None else {"counter": "x", "key": value}
    _, problems = validate_event(raw, time.time(), 1, 1)
    for field, message in problems:
        if field == "key":
            raise invalid(name, message)
    return value


def single_arg(name: str) -> str | None:
    """A query parameter's one value, None when absent; 400 when repeated."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise invalid(name, "must be given once")
    return values[0] if values else None


def text_arg(name: str) -> str:
    """A required free-text query parameter."""
    return text_value(name, single_arg(name))


def counter(value: str) -> str:
    """A counter name from the path, by the event schema's rule."""
    _, problems = validate_event({"counter": value, "key": "x"}, time.time(), 1, 1)
    for field, message in problems:
        if field == "counter":
            raise invalid("counter", message)
    return value


def name(kind: str, value: str) -> str:
    """A leaderboard name: [A-Za-z0-9_.:-]{1,64} (it becomes part of a Redis key tag)."""
    if not NAME_PATTERN.fullmatch(value):
        raise invalid(kind, "must match [A-Za-z0-9_.:-]{1,64}")
    return value


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An optional integer query parameter within [low, high]."""
    raw = single_arg(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise invalid(name, f"must be an integer between {low} and {high}")
    value = int(raw)
    if not low <= value <= high:
        raise invalid(name, f"must be between {low} and {high}")
    return value


def choice_arg(name: str, default: str, choices: tuple[str, ...]) -> str:
    """An optional query parameter from a fixed set."""
    value = single_arg(name)
    value = default if value is None else value
    if value not in choices:
        raise invalid(name, f"must be one of {', '.join(choices)}")
    return value


def day_arg(name: str, default: int) -> int:
    """An optional YYYY-MM-DD query parameter as a UTC day index."""
    raw = single_arg(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
        raise invalid(name, "must be a date YYYY-MM-DD")
    try:
        moment = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise invalid(name, "is not a valid date") from None
    return int(moment.timestamp()) // 86400


def rfc3339(epoch: int) -> str:
    """Epoch seconds as an RFC 3339 UTC string."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_arg(name: str, default: float) -> float:
    """An optional instant: RFC 3339 or epoch seconds, between 1970 and 9999."""
    raw = single_arg(name)
    if raw is None:
        return default
    try:
        value = float(raw) if EPOCH_PATTERN.fullmatch(raw) else parse_timestamp(raw)
    except ValueError as exc:
        raise invalid(name, f"{exc} (or epoch seconds)") from None
    if not 0 <= value <= MAX_EPOCH:
        raise invalid(name, "must be between 1970-01-01 and 9999-12-31T00:00:00Z")
    return value


def prop_arg(name: str) -> str:
    """A required event property name: [a-z0-9_]{1,64}, as events may carry it."""
    value = single_arg(name)
    if value is None:
        raise invalid(name, "is required: the event property to break down by")
    if not PROP_PATTERN.fullmatch(value):
        raise invalid(name, "must match [a-z0-9_]{1,64} (an event property name)")
    return value
