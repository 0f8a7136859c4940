"""POST /v1/events with hostile bodies of the maximum size: bounded time, memory and answers.

Each case is one request at the default limits (5 MiB, 10,000 events) through
the app on the test Redis. Time is this process's CPU time (the machine is
shared, so wall time would measure the neighbours), with generous bounds: a
well-behaved request of this size takes a few tens of milliseconds, the
defects these tests guard against took seconds (gzip members: 48 s). Memory is
the tracemalloc peak of a second, identical request, which counts what the
request allocates (the body read from the client included), not what the
test holds.
"""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib

import pytest

from tally.ingest.api.batch_json import MAX_VALUE_CHARS
from tally.ingest.api.body import MAX_GZIP_MEMBERS
from tests.test_api_support import W, snapshot

MAX_BYTES = 5 * 1024 * 1024  # the default TALLY_MAX_BODY_BYTES the `api` fixture runs with
MAX_CPU_S = 0.5
MAX_PEAK = 32 * 2**20  # well above a 5 MiB body's own copies, far below what parsing it built
GZIP = {"Content-Encoding": "gzip"}
NDJSON = "application/x-ndjson"


def post(api, data: bytes, content_type: str = "application/json", **headers):
    return api.post("/v1/events", data=data,
                    headers={**W, "Content-Type": content_type, **headers})


def measured(api, data: bytes, content_type: str = "application/json", **headers):
    """(response, CPU seconds, peak bytes allocated) of the request, posted twice."""
    start = time.process_time()
    response = post(api, data, content_type, **headers)
    cpu = time.process_time() - start
    tracemalloc.start()
    try:
        post(api, data, content_type, **headers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return response, cpu, peak


def assert_bounded(cpu: float, peak: int, max_cpu: float = MAX_CPU_S) -> None:
    assert cpu < max_cpu, f"took {cpu:.2f} s of CPU"
    assert peak < MAX_PEAK, f"allocated {peak / 2**20:.1f} MiB at the peak"


def problem(response) -> tuple[int, str, str]:
    return (response.status_code, response.json["type"].removeprefix("urn:tally:problem:"),
            response.json["detail"])


def event_line(n: int, size: int = 512) -> bytes:
    """One valid NDJSON event of `size` bytes (padded with spaces), its id n so that it counts."""
    event = json.dumps({"counter": "views", "key": "k" * 250, "id": f"{n:08d}", "user": "u"})
    return b"{" + b" " * (size - len(event) - 1) + event[1:].encode() + b"\n"


# --- gzip -----------------------------------------------------------------------------------


def test_gzip_body_of_empty_members_is_refused_at_once(api):
    members = gzip.compress(b"") * (MAX_BYTES // len(gzip.compress(b"")))
    assert len(members) == MAX_BYTES  # 262,144 members: took 48 s (each copied the rest)
    response, cpu, peak = measured(api, members, **GZIP)
    assert_bounded(cpu, peak)
    assert problem(response) == (413, "too-large", f"gzip body has more than {MAX_GZIP_MEMBERS} "
                                                   f"members; the limit is {MAX_GZIP_MEMBERS}")


def test_gzip_body_of_the_most_members_at_the_size_limit_is_counted(api, redis_client):
    """4,096 stored (uncompressed) members of 10,000 events in all: the largest accepted case."""
    lines = [event_line(n, 514) for n in range(10_000)]
    cuts = [len(lines) * m // MAX_GZIP_MEMBERS for m in range(MAX_GZIP_MEMBERS + 1)]
    data = b"".join(gzip.compress(b"".join(lines[a:b]), compresslevel=0)
                    for a, b in zip(cuts, cuts[1:], strict=False))
    assert MAX_BYTES - 64 * 1024 < len(data) <= MAX_BYTES
    assert len(b"".join(lines)) <= MAX_BYTES
    response, cpu, peak = measured(api, data, NDJSON, **GZIP)
    assert_bounded(cpu, peak, max_cpu=1.0)
    assert response.json == {"accepted": 10_000, "duplicates": 0}
    # counting 10,000 events (validation, the batch plan) takes most of this


def test_gzip_bomb_of_the_maximum_size_stops_at_the_limit(api):
    """5 MiB of deflate that would inflate to ~5 GB; its end is never read, so it has no trailer."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(2**20)
    head = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)  # the same bytes each time
    bomb = head + block * ((MAX_BYTES - len(head)) // len(block))
    assert MAX_BYTES - len(block) < len(bomb) <= MAX_BYTES
    response, cpu, peak = measured(api, bomb, **GZIP)
    assert_bounded(cpu, peak)
    assert problem(response) == (413, "too-large",
                                 f"decompressed body exceeds the limit of {MAX_BYTES} bytes")


@pytest.mark.parametrize("garbage", [b"\0", b"not gzip"])
def test_gzip_members_followed_by_garbage_are_a_precise_400(api, redis_client, garbage):
    """4,095 members of two events each, then garbage up to the size limit."""
    members = [gzip.compress(event_line(2 * m) + event_line(2 * m + 1),
                             compresslevel=0) for m in range(MAX_GZIP_MEMBERS - 1)]
    data = b"".join(members)
    data += garbage * ((MAX_BYTES - len(data)) // len(garbage))
    before = snapshot(redis_client)
    response, cpu, peak = measured(api, data, NDJSON, **GZIP)
    assert_bounded(cpu, peak)
    assert problem(response) == (
        400, "invalid-gzip", "body is not valid gzip: Error -3 while decompressing data: "
        f"incorrect header check (member {MAX_GZIP_MEMBERS}, from byte {len(b''.join(members))})")
    assert snapshot(redis_client) == before


# --- parse amplification --------------------------------------------------------------------


@pytest.mark.parametrize(("data", "content_type"), [
    (b"{}\n" * (MAX_BYTES // 3), NDJSON),  # took 1.8 s of CPU and 226 MB
    (b"[" + b"{}," * (MAX_BYTES // 3 - 2) + b"{}]", "application/json"),  # 0.7 s, 126 MB
    (b"[" + b"[]," * (MAX_BYTES // 3 - 2) + b"[]]", "application/json"),
    (b"[" + b'"ab",' * (MAX_BYTES // 5 - 2) + b'"ab"]', "application/json"),
    (b"1\n" * (MAX_BYTES // 2), NDJSON),
], ids=["ndjson-objects", "array-objects", "array-arrays", "array-strings", "ndjson-numbers"])
def test_too_many_values_stop_at_the_event_limit(api, data, content_type):
    assert len(data) <= MAX_BYTES
    response, cpu, peak = measured(api, data, content_type)
    assert_bounded(cpu, peak)
    assert problem(response) == (413, "too-large",
                                 "the batch has more than 10000 events; the limit is 10000")


def nested(size: int) -> bytes:
    """An event whose one unknown field holds `size` bytes of empty arrays."""
    return b'{"counter": "v", "key": "k", "x": [' + b"[]," * (size // 3) + b"[]]}"


@pytest.mark.parametrize(("data", "content_type", "detail"), [
    (b"[" + nested(MAX_BYTES - 64) + b"]", "application/json",
     f"body has a value (at line 1 column 2) longer than {MAX_VALUE_CHARS} characters of "
     "JSON, the limit for one event"),
    (nested(MAX_BYTES - 64), "application/json",
     f"body has a value (at line 1 column 1) longer than {MAX_VALUE_CHARS} characters of "
     "JSON, the limit for one event"),
    (b"\n\n" + nested(MAX_BYTES - 64), NDJSON,
     f"line 3 is longer than {MAX_VALUE_CHARS} characters, the limit for one event"),
], ids=["array-element", "single-object", "ndjson-line"])
def test_one_huge_value_is_refused_before_it_is_built(api, data, content_type, detail):
    response, cpu, peak = measured(api, data, content_type)
    assert_bounded(cpu, peak)
    assert problem(response) == (413, "too-large", detail)


def test_a_body_of_many_invalid_events_lists_a_bounded_number_of_problems(api, redis_client):
    """10,000 events of ~500 bytes, each with nested arrays and 29 unknown fields."""
    junk = "".join(f', "f{n}": [[], []]' for n in range(29))
    event = ('{"counter": "v", "key": "k"' + junk + "}").encode()
    data = b"[" + b",".join([event] * 10_000) + b"]"
    assert len(data) <= MAX_BYTES
    response, cpu, peak = measured(api, data)
    assert_bounded(cpu, peak, max_cpu=1.0)
    assert problem(response) == (400, "validation",
                                 "10000 of 10000 events are invalid; no event of this batch "
                                 "was counted; the first 100 problems are listed")
    errors = response.json["errors"]
    assert len(errors) == 100
    assert errors[:2] == [{"index": 0, "field": "f0", "message": "is not a known field"},
                          {"index": 0, "field": "f1", "message": "is not a known field"}]
    assert errors[-1] == {"index": 3, "field": "f12", "message": "is not a known field"}
    assert snapshot(redis_client) == {}


@pytest.mark.parametrize("content_type", [NDJSON, "application/json"])
def test_the_largest_valid_batch_is_counted_in_bounded_memory(api, redis_client, content_type):
    lines = [event_line(n, 520) for n in range(10_000)]
    data = (b"".join(lines) if content_type == NDJSON
            else b"[" + b",".join(line.rstrip() for line in lines) + b"]")
    assert MAX_BYTES - 256 * 1024 < len(data) <= MAX_BYTES
    response, cpu, peak = measured(api, data, content_type)
    assert_bounded(cpu, peak, max_cpu=1.0)
    assert response.json == {"accepted": 10_000, "duplicates": 0}


# --- combinations ---------------------------------------------------------------------------


def ndjson_events(count: int) -> bytes:
    return b"".join(event_line(n, 320) for n in range(count))


@pytest.mark.parametrize(("data", "content_type", "headers", "expected"), [
    (gzip.compress(ndjson_events(10_001)), NDJSON, GZIP,
     (413, "too-large", "the batch has more than 10000 events; the limit is 10000")),
    (gzip.compress(b"{}\n" * (MAX_BYTES // 3 + 1)), NDJSON, GZIP,
     (413, "too-large", f"decompressed body exceeds the limit of {MAX_BYTES} bytes")),
    (gzip.compress(ndjson_events(3))[:-9], NDJSON, GZIP,
     (400, "invalid-gzip", "gzip body is truncated (member 1 has no end)")),
    (gzip.compress(ndjson_events(3)) + gzip.compress(ndjson_events(3))[:30], NDJSON, GZIP,
     (400, "invalid-gzip", "gzip body is truncated (member 2 has no end)")),
    (b"", NDJSON, GZIP,
     (400, "invalid-gzip", "body is empty; a gzip body holds at least one member")),
    (gzip.compress(ndjson_events(2) + b'{"counter": "views"\n'), NDJSON, GZIP,
     (400, "invalid-json", "line 3 is not valid JSON: Expecting ',' delimiter at line 1 "
                           "column 20")),
    (gzip.compress(b"[" + b'{"counter": "views", "key": "a"},' * 3), "application/json", GZIP,
     (400, "invalid-json", "body is not valid JSON: Expecting value at line 1 column 101")),
    (gzip.compress(ndjson_events(2) + b'{"key": "\xff"}\n'), NDJSON, GZIP,
     (400, "invalid-utf8", "body is not valid UTF-8 (byte 649)")),
    (b"x" * (MAX_BYTES + 1), NDJSON, {"Content-Encoding": "br"},
     (413, "too-large", f"body of {MAX_BYTES + 1} bytes exceeds the limit of {MAX_BYTES} "
                        "bytes")),
    (gzip.compress(b"[" + b" " * MAX_BYTES + b"]"), "application/json", GZIP,
     (413, "too-large", f"decompressed body exceeds the limit of {MAX_BYTES} bytes")),
], ids=["gzip-ndjson-too-many", "gzip-ndjson-oversized", "gzip-truncated",
        "gzip-second-member-truncated", "gzip-empty", "gzip-ndjson-bad-line",
        "gzip-json-truncated-array", "gzip-bad-utf8", "oversized-unknown-encoding",
        "gzip-oversized-whitespace"])
def test_combinations_give_precise_errors_and_change_nothing(api, redis_client, data,
                                                             content_type, headers, expected):
    response = post(api, data, content_type, **headers)
    assert problem(response) == expected
    assert snapshot(redis_client) == {}
