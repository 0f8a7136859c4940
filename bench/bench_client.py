"""The Python client's throughput against raw HTTP posting of the same batches, same run.

Both sides send the same workload to one `tally serve` (2 workers) on
bench/run's Redis: EVENTS events a round (counter "views", keys Zipf-like over
10,000, a user and a fresh UUID id each) in batches of BATCH, from one
process. "client" calls `Client.count` per event from one thread and ends
with `flush()`, so its figure includes queueing and the background thread's
sends; "raw requests" builds the same event dicts and POSTs each full batch
with a requests.Session in the calling thread. Rounds interleave the two;
each figure is the median of ROUNDS, `vs_raw` the median of the rounds'
client / raw ratios, and each round checks that every event counted.
Under the runner: `bench/run -k client`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tally.client import Client  # noqa: E402
from tally.stack.process import await_ready, free_ports, stop  # noqa: E402

NEEDS = {"redis"}
TOKEN = "bench-token"
EVENTS = int(os.environ.get("BENCH_CLIENT_EVENTS", 50_000))
BATCH = 500
ROUNDS = 3
KEYS = [f"video:{int(10_000 * random.Random(7).random() ** 3)}" for _ in range(EVENTS)]


def serve(settings, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`tally serve` with 2 workers on a free port; (process, base URL) once ready."""
    port = free_ports(1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")} | {
        "TALLY_REDIS_URL": settings.redis_url, "TALLY_INGEST_PORT": str(port),
        "TALLY_WRITE_TOKENS": TOKEN, "TALLY_READ_TOKENS": TOKEN,
        "TALLY_SERIES_HISTORY": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "serve",
                                 "--workers", "2"], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    base = f"http://127.0.0.1:{port}"
    await_ready(proc, "tally serve", lambda: requests.get(base + "/readyz", timeout=1).ok,
                log_path, timeout=30)
    return proc, base


def with_client(base: str, counter: str) -> float:
    """Seconds to count EVENTS through one Client and flush it."""
    client = Client(base, TOKEN, batch_size=BATCH)
    started = time.perf_counter()
    for i, key in enumerate(KEYS):
        client.count(counter, key, user=f"u{i % 100_000}")
    client.flush()
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def with_requests(base: str, counter: str) -> float:
    """Seconds to build the same events and POST them BATCH at a time with requests."""
    session = requests.Session()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    started = time.perf_counter()
    batch: list[dict] = []
    for i, key in enumerate(KEYS):
        batch.append({"counter": counter, "key": key, "id": uuid.uuid4().hex,
                      "user": f"u{i % 100_000}"})
        if len(batch) == BATCH or i == len(KEYS) - 1:
            response = session.post(base + "/v1/events", data=json.dumps(batch).encode(),
                                    headers=headers, timeout=30)
            response.raise_for_status()
            batch = []
    elapsed = time.perf_counter() - started
    session.close()
    return elapsed


def counted(base: str, counter: str) -> int:
    """All events of a counter, summed over its keys."""
    reader = Client(base, TOKEN)
    try:
        return sum(reader.totals(counter, set(KEYS)).values())
    finally:
        reader.close()


def run(settings) -> list[dict]:
    """Rows: client and raw requests, events/s (median of ROUNDS), the client's vs_raw ratio."""
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-client-{os.getpid()}.log"
    proc, base = serve(settings, log_path)
    times: dict[str, list[float]] = {"client": [], "raw requests": []}
    try:
        for round_ in range(ROUNDS):
            for name, send in (("client", with_client), ("raw requests", with_requests)):
                counter = f"bench_client_{round_}_{name.split()[0]}"
                times[name].append(send(base, counter))
                assert counted(base, counter) == EVENTS, f"{name} lost events"
    finally:
        stop(proc)
        log_path.unlink(missing_ok=True)
    ratios = [raw / mine for mine, raw in zip(times["client"], times["raw requests"],
                                               strict=True)]
    rows = []
    for name, seconds in times.items():
        rows.append({"case": f"{name}, batches of {BATCH}", "events": EVENTS,
                     "events_per_s": round(EVENTS / statistics.median(seconds)),
                     "rounds": " ".join(f"{EVENTS / s:,.0f}" for s in seconds)})
    rows[0]["vs_raw"] = round(statistics.median(ratios), 2)
    return rows


if __name__ == "__main__":
    from tally.stack.ephemeral import ephemeral_stack
    with ephemeral_stack(NEEDS) as stack_settings:
        for row in run(stack_settings):
            print(row)
