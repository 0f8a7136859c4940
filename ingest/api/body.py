"""Request bodies: size limits (before and after gzip), media types and strict JSON.

JSON here is stricter than Python's: duplicate object keys, NaN/Infinity
and invalid UTF-8 are refused with a precise 400 instead of being resolved
silently, and a body is never decompressed past the size limit (gzip bombs).

A body's cost is bounded by its size, whatever its shape: gzip members are
inflated in one pass, and a batch is parsed one value at a time, each from
a bounded window (`json_values`, `ndjson`), so the caller counts values as
they come, stops at its limit, and keeps only what it has checked.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator

from flask import request

from ingest.api.problems import Problem, bad_request

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


class _DuplicateKey(Exception):
    pass


class _BadConstant(Exception):
    pass


class _HugeInteger(Exception):
    pass


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(duplicate)
    return obj


def _constant(name: str) -> None:
    raise _BadConstant(name)


# No field takes an integer past a double's range, and past 4300 digits int() itself refuses.
MAX_INT_DIGITS = 308


def _integer(literal: str) -> int:
    digits = len(literal) - literal.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise _HugeInteger(digits)
    return int(literal)


# One decoder for every call: json.loads(**kwargs) would build a new one each time.
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant,
                            parse_int=_integer)


def too_large(detail: str) -> Problem:
    """A 413 with a sentence saying which limit was hit."""
    return Problem(413, "too-large", "Content too large", detail)


def _problem(exc: Exception, where: str) -> Problem:
    """The 400 for a failure to parse JSON: what went wrong and where."""
    if isinstance(exc, json.JSONDecodeError):
        return bad_request(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}", "invalid-json")
    if isinstance(exc, _DuplicateKey):
        return bad_request(f"{where} has a JSON object with the key {exc.args[0]!r} more than "
                           "once", "duplicate-key")
    if isinstance(exc, _BadConstant):
        return bad_request(f"{where} contains {exc.args[0]}, which is not valid JSON",
                           "invalid-json")
    if isinstance(exc, _HugeInteger):
        return bad_request(f"{where} contains an integer of {exc.args[0]} digits; at most "
                           f"{MAX_INT_DIGITS} are accepted", "invalid-body")
    return bad_request(f"{where} is JSON nested too deeply", "too-deep")


_PARSE_ERRORS = (json.JSONDecodeError, _DuplicateKey, _BadConstant, _HugeInteger, RecursionError)


def loads(text: str, where: str = "body") -> object:
    """Parse one JSON text strictly; raise a 400 Problem saying what and where."""
    try:
        return _DECODER.decode(text)
    except _PARSE_ERRORS as exc:
        raise _problem(exc, where) from None


# One event, at every field's limit with every character escaped, is about 4 KB of JSON.
MAX_VALUE_CHARS = 64 * 1024
# Past the last complete token a parse may look this far ahead ("\\u12" is cut short).
_LOOKAHEAD = 16
# Values are parsed from a copy of this much of the text: one copy per ~3/4 window.
_WINDOW = 4 * MAX_VALUE_CHARS
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, nothing else
_CONTENT_LINE = re.compile(r"^[ \t\r]*[^ \t\r\n]", re.MULTILINE)


def _position(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line} column {pos - text.rfind(chr(10), 0, pos)}"


def _too_long(where: str, text: str, pos: int) -> Problem:
    return too_large(f"{where} has a value (at {_position(text, pos)}) longer than "
                     f"{MAX_VALUE_CHARS} characters of JSON, the limit for one event")


class _Values:
    """Parses the values of one JSON text one at a time, each from at most MAX_VALUE_CHARS.

    Python's parser builds up to ~25 bytes of objects per character ("[[],[],...]"),
    so parsing a whole 5 MiB body at once costs over 100 MB before anything can
    be counted or checked. Here each value is parsed from a bounded copy of the
    text (a window), so what one value builds is bounded, and the caller can
    drop it before the next is parsed. Positions in errors are the whole text's.
    """

    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.start, self.window, self.end = 0, "", 0  # the window is text[start:end]

    def skip(self, pos: int) -> int:
        """The position of the first non-whitespace character at or after pos."""
        return _WHITESPACE.match(self.text, pos).end()

    def fail(self, message: str, pos: int) -> Problem:
        """The 400 for a syntax error at pos of the text."""
        return _problem(json.JSONDecodeError(message, self.text, pos), self.where)

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
            return _problem(exc, self.where)
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
        except (StopIteration, *_PARSE_ERRORS) as exc:
            raise self.refuse(exc, pos) from None
        if end - offset > MAX_VALUE_CHARS:
            raise _too_long(self.where, self.text, pos)
        return value, self.start + end


_AHEAD = MAX_VALUE_CHARS + _LOOKAHEAD
_SCAN = _DECODER.scan_once
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
            except (StopIteration, *_PARSE_ERRORS) as exc:
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


# An honest client sends one member, or a few when it concatenates compressed pieces.
MAX_GZIP_MEMBERS = 4096
# Input fed per call: it doubles up to the maximum within one member, so the
# rest of a call's input that zlib copies at a member's end (`unused_data`)
# is never more than the member itself plus the first piece: linear in all.
_FIRST_PIECE, _MAX_PIECE = 64, 64 * 1024


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress every gzip member of data in one pass; 413 past max_bytes or too many members."""
    if not data:
        raise bad_request("body is empty; a gzip body holds at least one member", "invalid-gzip")
    view, out, size, pos, members = memoryview(data), [], 0, 0, 0
    while pos < len(data):  # concatenated gzip members are one valid stream
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise too_large(f"gzip body has more than {MAX_GZIP_MEMBERS} members; the limit is "
                            f"{MAX_GZIP_MEMBERS}")
        stream, piece = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), _FIRST_PIECE
        while not stream.eof:
            if pos >= len(data):
                raise bad_request(f"gzip body is truncated (member {members} has no end)",
                                  "invalid-gzip")
            given = view[pos:pos + piece]
            try:  # output past the limit stops here: the rest is never inflated (gzip bombs)
                chunk = stream.decompress(given, max_bytes + 1 - size)
            except zlib.error as exc:
                raise bad_request(f"body is not valid gzip: {exc} (member {members}, from byte "
                                  f"{pos})", "invalid-gzip") from None
            size += len(chunk)
            if size > max_bytes:
                raise too_large(f"decompressed body exceeds the limit of {max_bytes} bytes")
            if chunk:
                out.append(chunk)
            pos += len(given) - len(stream.unused_data)
            piece = min(2 * piece, _MAX_PIECE)
    return b"".join(out)


def raw_body(max_bytes: int) -> bytes:
    """The request body, decoded from gzip if so labelled; 413 past max_bytes either way."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise too_large(f"body of {length} bytes exceeds the limit of {max_bytes} bytes")
    data = request.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(f"body exceeds the limit of {max_bytes} bytes")
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding in ("", "identity"):
        return data
    if coding in ("gzip", "x-gzip"):
        return _gunzip(data, max_bytes)
    raise Problem(415, "unsupported-encoding", "Unsupported media type",
                  f"Content-Encoding {coding!r} is not supported; use gzip or none")


def text(data: bytes) -> str:
    """Decode a body as UTF-8 or answer 400 with the offending byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"body is not valid UTF-8 (byte {exc.start})", "invalid-utf8") from None


def media_type(allowed: frozenset[str]) -> str:
    """The request's media type if it is one of `allowed`, else 415."""
    mimetype = request.mimetype
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if mimetype in allowed and charset in ("utf-8", "utf8"):
        return mimetype
    given = request.content_type or "none"
    raise Problem(415, "unsupported-media-type", "Unsupported media type",
                  f"Content-Type {given!r} is not accepted here; use "
                  f"{' or '.join(sorted(allowed))} (UTF-8)")


def json_object(max_bytes: int = 64 * 1024) -> dict:
    """A small JSON object body (leaderboard and rate-limit calls)."""
    media_type(JSON_TYPES)
    value = loads(text(raw_body(max_bytes)))
    if not isinstance(value, dict):
        raise bad_request("body must be a JSON object", "invalid-body")
    return value
