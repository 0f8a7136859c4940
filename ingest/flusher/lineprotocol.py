"""InfluxDB line protocol escaping, as InfluxDB 1.x parses it (checked against 1.6).

Tag values escape ',', '=' and ' ' with a backslash. A backslash elsewhere is
kept literally and must not be doubled (1.x stores "\\\\" as two characters).
1.x cannot represent a tag value that ends in a backslash, or has an odd run
of backslashes right before ',', '=' or ' ': `representable` tells, and
`tag_value` refuses those (and control characters) instead of writing a
different key.
"""

from __future__ import annotations

import re

from tally.printable import printable

ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
# An odd run of backslashes before a special character, or any trailing run.
AMBIGUOUS = re.compile(r"(?<!\\)(\\\\)*\\(?=[,= ])|\\$")


def representable(value: str) -> bool:
    """Tell whether InfluxDB 1.x can store value as a tag value and give it back unchanged."""
    return bool(value) and printable(value) and not AMBIGUOUS.search(value)


def tag_value(value: str) -> str:
    """Escape a tag key or value; raise ValueError for values 1.x cannot round-trip."""
    if not representable(value):
        raise ValueError(f"{value!r} cannot be an InfluxDB 1.x tag value unchanged")
    return escape(value)


def escape(value: str) -> str:
    """Escape a tag value already known to be representable (no check: the hot path)."""
    return value.translate(ESCAPES)


def influxql_string(value: str) -> str:
    """Quote a string literal for InfluxQL (WHERE key = '...')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
