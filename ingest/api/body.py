"""Request bodies: size limits (before and after gzip), media types and strict JSON.

JSON here is stricter than Python's: duplicate object keys, NaN/Infinity
and invalid UTF-8 are refused with a precise 400 instead of being resolved
silently, and a body is never decompressed past the size limit (gzip bombs).

Gzip members are inflated in one pass, so a body's cost is bounded by its
size whatever its members; batch_json parses batches one value at a time
with these rules.
"""

from __future__ import annotations

import json
import zlib

from flask import request

from tally.ingest.api.problems import Problem, bad_request

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
DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant,
                            parse_int=_integer)


def too_large(detail: str) -> Problem:
    """A 413 with a sentence saying which limit was hit."""
    return Problem(413, "too-large", "Content too large", detail)


def parse_problem(exc: Exception, where: str) -> Problem:
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


PARSE_ERRORS = (json.JSONDecodeError, _DuplicateKey, _BadConstant, _HugeInteger, RecursionError)


def loads(text: str, where: str = "body") -> object:
    """Parse one JSON text strictly; raise a 400 Problem saying what and where."""
    try:
        return DECODER.decode(text)
    except PARSE_ERRORS as exc:
        raise parse_problem(exc, where) from None


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
