"""Ingest over HTTP (gunicorn, 2 and 4 workers, driven by wrk) against the core's direct throughput.

Every case counts the same event mix (counter "views", keys spread over
10,000, a user and a unique id each, server time) on the same redis-server,
so the ratio "HTTP / direct apply_batch" says what the HTTP layer costs:
parsing, validation, Flask, gunicorn and the load generator, which shares the
machine's cores. Standalone: `.venv/bin/python bench/bench_ingest_http.py`;
under the runner: `bench/run -k ingest_http`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.counting.batch import apply_batch  # noqa: E402
from ingest.counting.config import CountingConfig  # noqa: E402
from ingest.counting.events import validate_batch  # noqa: E402
from tally.settings import load_settings  # noqa: E402
from tally.stack import services  # noqa: E402
from tally.stack.process import await_ready, free_ports, stop  # noqa: E402

NEEDS = {"redis"}
TOKEN = "bench-token"
SECONDS = 8
DIRECT_BATCHES = 40
# One event of the mix; n is the event's global number (Lua below builds the same).
EVENT = '{{"counter":"views","key":"video:{k}","id":"{p}-{n}","user":"u{u}"}}'
LUA = """
local batch, prefix, sent = %(batch)d, "%(prefix)s", 0
local headers = {["Content-Type"] = "application/json",
                 ["Authorization"] = "Bearer %(token)s"}
request = function()
  local parts = {}
  for i = 1, batch do
    local n = sent * batch + i
    parts[i] = string.format('{"counter":"views","key":"video:%%d","id":"%%s-%%d-%%d",'
                             .. '"user":"u%%d"}', n * 7919 %% 10000, prefix,
                             math.random(1, 1000000000), n, n %% 100000)
  end
  sent = sent + 1
  return wrk.format("POST", "/v1/events", headers, "[" .. table.concat(parts, ",") .. "]")
end
"""


def raw_events(n: int, prefix: str) -> list[dict]:
    """The bench's event mix as parsed JSON (what the API hands to validate_batch)."""
    import json
    return [json.loads(EVENT.format(k=i * 7919 % 10000, p=prefix, n=i, u=i % 100_000))
            for i in range(1, n + 1)]


def direct(client, batch: int) -> tuple[float, float]:
    """Events/s of apply_batch alone and of validate_batch + apply_batch, in-process."""
    settings = load_settings({})
    config = CountingConfig.from_settings(settings)
    raws = [raw_events(batch, f"d{j}") for j in range(DIRECT_BATCHES)]
    started, applied_only = time.perf_counter(), 0.0
    for raw in raws:
        now = time.time()
        events = validate_batch(raw, now, settings.accepted_lateness, settings.clock_skew)
        t0 = time.perf_counter()
        apply_batch(client, config, events, now)
        applied_only += time.perf_counter() - t0
    total = time.perf_counter() - started
    n = batch * DIRECT_BATCHES
    return n / applied_only, n / total


@contextmanager
def serving(redis_url: str, workers: int, tmp: Path):
    """`tally serve --workers N` on a free port; yields its base URL."""
    port = free_ports(1)[0]
    env = {**os.environ, "TALLY_REDIS_URL": redis_url, "TALLY_INGEST_PORT": str(port),
           "TALLY_WRITE_TOKENS": TOKEN, "TALLY_READ_TOKENS": TOKEN}
    log_path = tmp / f"serve-{workers}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tally.cli", "serve", "--workers",
                                 str(workers)], stdout=log, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        await_ready(proc, "tally serve", lambda: requests.get(base + "/readyz", timeout=1).ok,
                    log_path, timeout=30)
        yield base
    finally:
        stop(proc)


def wrk(base: str, batch: int, tmp: Path, prefix: str) -> tuple[float, int]:
    """(requests/s, non-2xx responses) of wrk posting `batch`-event bodies for SECONDS."""
    script = tmp / f"{prefix}.lua"
    script.write_text(LUA % {"batch": batch, "prefix": prefix, "token": TOKEN})
    connections = 16 if batch == 1 else 4
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{SECONDS}s",
                          "-s", str(script), base + "/v1/events"],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, int(errors[1]) if errors else 0


def run(settings=None) -> list[dict]:
    """Rows: direct core throughput, then HTTP single events and 1,000-event batches."""
    with tempfile.TemporaryDirectory(prefix="tally-bench-http-") as name, _redis(settings) as url:
        tmp, client = Path(name), redis.Redis.from_url(url)
        try:
            apply_only, validate_apply = direct(client, 1000)
            rows = [{"case": "core apply_batch, 1000-event batches", "events_per_s": apply_only,
                     "vs_core": 1.0},
                    {"case": "core validate_batch + apply_batch", "events_per_s": validate_apply,
                     "vs_core": validate_apply / apply_only}]
            for workers in (2, 4):
                with serving(url, workers, tmp) as base:
                    for batch in (1, 1000):
                        rate, errors = wrk(base, batch, tmp, f"w{workers}b{batch}")
                        rows.append({"case": f"HTTP {batch}-event requests, {workers} workers",
                                     "events_per_s": rate * batch,
                                     "vs_core": rate * batch / apply_only,
                                     "requests_per_s": rate, "non_2xx": errors})
            return rows
        finally:
            client.close()


@contextmanager
def _redis(settings):
    if settings is not None:
        yield settings.redis_url
        return
    with tempfile.TemporaryDirectory(prefix="tally-bench-redis-") as tmp:
        port = free_ports(1)[0]
        with services.running(services.redis(port, Path(tmp) / "data"), Path(tmp) / "log"):
            yield f"redis://127.0.0.1:{port}/0"


if __name__ == "__main__":
    for row in run():
        print("  ".join(f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))
