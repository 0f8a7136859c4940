"""Batch bodies parsed one value at a time, each from a bounded window of the text.

Python's parser builds up to ~25 bytes of objects per character of JSON
("[[],[],...]"), so parsing a whole 5 MiB body at once costs over 100 MB
before anything can be counted or checked. Here the elements of a JSON array
and the lines of NDJSON come one at a time, each at most MAX_VALUE_CHARS long:
the caller counts them as they come, stops at its limit, and keeps only what
it has checked. Values and errors are exactly those of parsing the whole text
with body.loads (tests/test_api_body_parsing.py checks this).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from tally.ingest.api.body import DECODER, PARSE_ERRORS, loads, parse_problem, too_large
from tally.ingest.api.problems import Problem, bad_request

# One event, at every field's limit with every character escaped, is about 34 KB of JSON
# (its 16 props are 31 KB of it; tests/test_event_props.py posts one).
MAX_VALUE_CHARS = 64 * 1024
# How far before a window's end a parse can fail because the window cut it short
# (an escape like \u12 cut inside its four digits fails at its start).
_LOOKAHEAD = 16
# Values are parsed from a copy of this much of the text: one copy per ~3/4 window.
_WINDOW = 4 * MAX_VALUE_CHARS
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, nothing else
_CONTENT_LINE = re.compile(r"^[ \t\r]*[^ \t\r\n]", re.MULTILINE)


def _position(text: str, pos: int) -> str:
    line, line_start = text.count("\n", 0, pos) + 1, text.rfind("\n", 0, pos) + 1
    return f"line {line} column {pos - line_start + 1}"


def _too_long(where: str, text: str, pos: int) -> Problem:
    return too_large(f"{where} has a value (at {_position(text, pos)}) longer than "
                     f"{MAX_VALUE_CHARS} characters of JSON, the limit for one event")


class _Values:
    """Parses the values of one JSON text one at a time from a window, a bounded copy of it.

    Positions in errors are the whole text's. A value the window cuts short
    (it runs on past the window, which holds MAX_VALUE_CHARS from where the
    value starts) is too long: a 413, never a syntax error or a prefix of it.
    """

    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.start, self.window, self.end = 0, "", 0  # the window is text[start:end]

    def skip(self, pos: int) -> int:
        """The position of the first non-whitespace character at or after pos."""
        return _WHITESPACE.match(self.text, pos).end()

    def fail(self, message: str, pos: int) -> Problem:
        """The 400 for a syntax error at pos of the text."""
        return parse_problem(json.JSONDecodeError(message, self.text, pos), self.where)

    def slide(self, pos: int) -> None:
        """Make sure the window holds MAX_VALUE_CHARS (and a little) from pos, or the rest."""
        if self.end < min(len(self.text), pos + _AHEAD):
            self.start, self.window = pos, self.text[pos:pos + _WINDOW]
            self.end = pos + len(self.window)

    def refuse(self, exc: Exception, pos: int) -> Problem:
        """The answer to a failed parse of the value at pos (window already slid there)."""
        if isinstance(exc, StopIteration):  # what raw_decode reports as "Expecting value"
            exc = json.JSONDecodeError("Expecting value", self.window, exc.value)
        if not isinstance(exc, json.JSONDecodeError):
            return parse_problem(exc, self.where)
        cut = exc.pos >= len(self.window) - _LOOKAHEAD or exc.msg.startswith("Unterminated")
        if cut and self.end < len(self.text):  # it runs on past the window: too long
            return _too_long(self.where, self.text, pos)
        return self.fail(exc.msg, self.start + exc.pos)

    def value(self, pos: int) -> tuple[object, int]:
        """The value starting at pos and the position just after it."""
        self.slide(pos)
        offset = pos - self.start
        try:
            value, end = _SCAN(self.window, offset)
        except (StopIteration, *PARSE_ERRORS) as exc:
            raise self.refuse(exc, pos) from None
        if end - offset > MAX_VALUE_CHARS:
            raise _too_long(self.where, self.text, pos)
        return value, self.start + end


_AHEAD = MAX_VALUE_CHARS + _LOOKAHEAD
_SCAN = DECODER.scan_once
_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}


def _one_object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be a JSON array of event objects or one event "
                          f"object, not {_KINDS.get(type(value), 'null')}", "invalid-body")
    return value


def json_values(text: str, where: str = "body") -> Iterator[object]:
    """The elements of a top-level JSON array one at a time, or else the one top-level object.

    Strict like `loads`, with the same errors; an element (or the object) longer
    than MAX_VALUE_CHARS is a 413. Anything else at the top is a 400 naming it.
    """
    if len(text) <= MAX_VALUE_CHARS:  # what parsing it whole builds is bounded: at C speed
        value = loads(text, where)
        yield from value if isinstance(value, list) else [_one_object(value, where)]
        return
    parser = _Values(text, where)
    pos = parser.skip(0)
    if not text.startswith("[", pos):
        value, pos = parser.value(pos)
        if parser.skip(pos) != len(text):
            raise parser.fail("Extra data", parser.skip(pos))
        yield _one_object(value, where)
        return
    pos = parser.skip(pos + 1)
    if text.startswith("]", pos):
        pos += 1
    else:
        scan, size = _SCAN, len(text)
        while True:  # parser.value inlined: this loop runs once per event of every batch
            if parser.end < size and parser.end < pos + _AHEAD:
                parser.slide(pos)
            offset = pos - parser.start
            try:
                value, end = scan(parser.window, offset)
            except (StopIteration, *PARSE_ERRORS) as exc:
                raise parser.refuse(exc, pos) from None
            if end - offset > MAX_VALUE_CHARS:
                raise _too_long(where, text, pos)
            yield value
            pos = parser.start + end
            if text.startswith(",", pos):  # compact JSON: no whitespace to look for
                pos += 1
            else:
                pos = parser.skip(pos)
                if text.startswith("]", pos):
                    pos += 1
                    break
                if not text.startswith(",", pos):
                    raise parser.fail("Expecting ',' delimiter", pos)
                pos += 1
            if text[pos:pos + 1] in _BLANKS:
                pos = parser.skip(pos)
    if parser.skip(pos) != len(text):
        raise parser.fail("Extra data", parser.skip(pos))


_BLANKS = (" ", "\t", "\n", "\r")
# Bodies of up to this many lines are split at once, at C speed; longer ones (hostile or
# mostly blank) are searched line by line, so that none costs more than the lines it has.
_SPLIT_LINES = 65_536


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line that is not just JSON whitespace."""
    if text.count("\n") < _SPLIT_LINES:
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip(" \t\r"):
                yield number, line
        return
    number, counted_to = 1, 0
    for match in _CONTENT_LINE.finditer(text):
        start = match.start()
        number += text.count("\n", counted_to, start)
        counted_to = start
        end = text.find("\n", start)
        yield number, text[start:len(text) if end < 0 else end]


def ndjson(text: str) -> Iterator[object]:
    """Newline-delimited JSON one line at a time; lines of only JSON whitespace are skipped.

    A line longer than MAX_VALUE_CHARS is a 413, found before it is parsed;
    errors name the line.
    """
    for number, line in _content_lines(text):
        if len(line) > MAX_VALUE_CHARS:
            raise too_large(f"line {number} is longer than {MAX_VALUE_CHARS} characters, the "
                            "limit for one event")
        yield loads(line, f"line {number}")
