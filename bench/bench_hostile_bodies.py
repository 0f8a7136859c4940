"""CPU time and peak memory of one POST /v1/events for hostile bodies of the maximum size.

In-process through Flask's test client at the default limits (5 MiB, 10,000
events): `cpu_ms` is this process's CPU time for the request, `peak_mib` the
tracemalloc peak of a second, identical request (everything it allocates,
the body read from the client and its decoded text included). A well-formed
batch of the same size is the yardstick; tests/test_api_hostile_bodies.py
holds the bounds.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
import tracemalloc
import zlib

NEEDS = {"redis"}
TOKEN = "bench-write"
MAX = 5 * 1024 * 1024


def _events(count: int, size: int) -> bytes:
    lines = []
    for n in range(count):
        event = json.dumps({"counter": "views", "key": "k" * 250, "id": f"b{n:08d}"})
        lines.append(b"{" + b" " * (size - len(event) - 1) + event[1:].encode() + b"\n")
    return b"".join(lines)


def _bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(2**20)
    head = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    return head + block * ((MAX - len(head)) // len(block))


def cases() -> list[tuple[str, bytes, str, bool]]:
    """(case, body, content type, gzip) for each measured request."""
    empty_member = gzip.compress(b"")
    return [
        ("valid: 10,000 events, NDJSON", _events(10_000, 520), "application/x-ndjson", False),
        ("gzip: 262,144 empty members", empty_member * (MAX // len(empty_member)),
         "application/json", True),
        ("gzip: bomb (5 MiB -> ~5 GB)", _bomb(), "application/json", True),
        ("NDJSON: 5 MiB of {} lines", b"{}\n" * (MAX // 3), "application/x-ndjson", False),
        ("JSON: 5 MiB array of {}", b"[" + b"{}," * (MAX // 3 - 2) + b"{}]", "application/json",
         False),
        ("JSON: 5 MiB array of []", b"[" + b"[]," * (MAX // 3 - 2) + b"[]]", "application/json",
         False),
        ("JSON: one 5 MiB event", b'{"counter": "v", "key": "k", "x": ['
         + b"[]," * (MAX // 3 - 30) + b"[]]}", "application/json", False),
    ]


def run(settings) -> list[dict]:
    """One row per case: the answer, CPU seconds and peak MiB of the request."""
    from tally.ingest.api import close_app, create_app

    app = create_app(dataclasses.replace(settings, write_tokens=(TOKEN,), series_history=False))
    client = app.test_client()
    rows = []
    try:
        for name, data, content_type, gzipped in cases():
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
            if gzipped:
                headers["Content-Encoding"] = "gzip"
            start = time.process_time()
            response = client.post("/v1/events", data=data, headers=headers)
            cpu = time.process_time() - start
            tracemalloc.start()
            client.post("/v1/events", data=data, headers=headers)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append({"case": name, "body_mib": round(len(data) / 2**20, 2),
                         "status": response.status_code, "cpu_ms": round(cpu * 1000),
                         "peak_mib": round(peak / 2**20, 1)})
    finally:
        close_app(app)
    return rows
