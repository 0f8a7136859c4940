"""Request bodies: size limits (before and after gzip), media types and strict JSON.

JSON here is stricter than Python's: duplicate object keys, NaN/Infinity
and invalid UTF-8 are refused with a precise 400 instead of being resolved
silently, and a body is never decompressed past the size limit (gzip bombs).
"""

from __future__ import annotations

import json
import zlib

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


def loads(text: str, where: str = "body") -> object:
    """Parse one JSON text strictly; raise a 400 Problem saying what and where."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}", "invalid-json") from None
    except _DuplicateKey as exc:
        raise bad_request(f"{where} has a JSON object with the key {exc.args[0]!r} more than "
                          "once", "duplicate-key") from None
    except _BadConstant as exc:
        raise bad_request(f"{where} contains {exc.args[0]}, which is not valid JSON",
                          "invalid-json") from None
    except _HugeInteger as exc:
        raise bad_request(f"{where} contains an integer of {exc.args[0]} digits; at most "
                          f"{MAX_INT_DIGITS} are accepted", "invalid-body") from None
    except RecursionError:
        raise bad_request(f"{where} is JSON nested too deeply", "too-deep") from None


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    out, rest = [], data
    size = 0
    while rest:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = stream.decompress(rest, max_bytes + 1 - size)
        except zlib.error as exc:
            raise bad_request(f"body is not valid gzip: {exc}", "invalid-gzip") from None
        size += len(chunk)
        if size > max_bytes:
            raise too_large(f"decompressed body exceeds the limit of {max_bytes} bytes")
        if not stream.eof:
            raise bad_request("gzip body is truncated", "invalid-gzip")
        out.append(chunk)
        rest = stream.unused_data  # concatenated gzip members are one valid stream
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


def ndjson(body: str) -> list:
    """Parse newline-delimited JSON, one value per line that is not just JSON whitespace."""
    return [loads(line, f"line {n}") for n, line in enumerate(body.split("\n"), 1)
            if line.strip(" \t\r")]


def json_object(max_bytes: int = 64 * 1024) -> dict:
    """A small JSON object body (leaderboard and rate-limit calls)."""
    media_type(JSON_TYPES)
    value = loads(text(raw_body(max_bytes)))
    if not isinstance(value, dict):
        raise bad_request("body must be a JSON object", "invalid-body")
    return value
