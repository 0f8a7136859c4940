"""The one definition of "printable" text (event keys, ids, users; InfluxDB tag values).

Printable means what str.isprintable means (no character of a Unicode
"Other" or "Separator" category except the space), judged by a current
Unicode database, the `unicodedata2` package, rather than the one Python was
built with (Python 3.11's is Unicode 14.0, which refuses every emoji added
since as unassigned). Python's own check runs first, at C speed: a string it
accepts is accepted. That is exact as long as no character Python's
database calls printable is unprintable in the newer one, which
tests/test_printable.py checks over every code point.
"""

from __future__ import annotations

import unicodedata2

UNICODE_VERSION = unicodedata2.unidata_version
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


def printable_char(char: str) -> bool:
    """Whether one character is printable by the current Unicode database."""
    return char == " " or unicodedata2.category(char) not in _UNPRINTABLE_CATEGORIES


def printable(text: str) -> bool:
    """Whether every character of text is printable by the current Unicode database."""
    return text.isprintable() or all(c.isprintable() or printable_char(c) for c in text)
