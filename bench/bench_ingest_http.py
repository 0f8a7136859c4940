"""Ingest over HTTP under candidate servers, side by side, against the core and a bare Flask app.

Every case counts the same event mix (counter "views", keys spread over
10,000, a user and a unique id each, server time) on the same redis-server.
Each candidate server runs two apps with 2 workers: the ingest API and a bare
Flask endpoint answering `{}` without Redis (bench/http_apps.py), so one run
prints, per server and request size, the ingest rate, its ratio to the
gunicorn gthread server Tally used before (`vs_gthread`), to the bare app on
the same server (`vs_hello`) and to the core's direct apply_batch
(`vs_core`). wrk drives 64 connections with 1-event requests and 4 with
1,000-event requests; every figure is the median of RUNS interleaved runs.
The last rows hold each server against 500 hostile connections (slow
headers, idle, slow bodies; tests/slowloris.py) while a normal client
alternates /healthz and one-event posts on new connections.

Candidates that are not installed get a row saying so; install them with
`.venv/bin/pip install granian uvicorn a2wsgi uvloop httptools waitress`.
Standalone: `.venv/bin/python bench/bench_ingest_http.py`; under the runner:
`bench/run -k ingest_http`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tally.events import validate_batch  # noqa: E402
from tally.ingest.counting.batch import apply_batch  # noqa: E402
from tally.ingest.counting.config import CountingConfig  # noqa: E402
from tally.settings import load_settings  # noqa: E402
from tally.stack import services  # noqa: E402
from tally.stack.process import await_ready, free_ports, stop  # noqa: E402
from tests.slowloris import Siege, percentile, timed_requests  # noqa: E402

NEEDS = {"redis"}
TOKEN = "bench-token"
WORKERS = 2
SECONDS = 5
RUNS = 3
CONNECTIONS = {1: 64, 1000: 4}  # wrk connections per request size
SIEGE = {"slow-headers": 300, "idle": 100, "slow-body": 100}
SIEGE_SECONDS = 20  # past the body deadline (15 s), so every kind of drop shows
DIRECT_BATCHES = 40
BIN = Path(sys.executable).parent
HTTP_APPS = Path(__file__).resolve().parent / "http_apps.py"
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


@dataclass(frozen=True)
class Candidate:
    """One HTTP server under test: how to start it for an app ("tally" or "hello")."""

    name: str
    module: str  # what must be importable for it to run
    argv: Callable[[str, int], list[str]]  # (app, port) -> command line


def _gthread(app: str, port: int) -> list[str]:
    return [str(BIN / "gunicorn"), "-k", "gthread", "--threads", "4", "-w", str(WORKERS),
            "--keep-alive", "5", "--timeout", "30", "-b", f"127.0.0.1:{port}",
            "--no-control-socket", f"http_apps:{app}_app()"]


def _tally_serve(app: str, port: int) -> list[str]:
    if app == "tally":
        return [sys.executable, "-m", "tally.stack.cli", "serve", "--workers", str(WORKERS)]
    return [sys.executable, str(HTTP_APPS), "hello", str(WORKERS)]


def _granian(app: str, port: int) -> list[str]:
    return [str(BIN / "granian"), "--interface", "wsgi", "--workers", str(WORKERS),
            "--host", "127.0.0.1", "--port", str(port), "--http", "1", "--no-ws",
            "--http1-header-read-timeout", "5000", "--factory", f"http_apps:{app}_app"]


def _uvicorn(app: str, port: int) -> list[str]:
    return [str(BIN / "uvicorn"), "--workers", str(WORKERS), "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--timeout-keep-alive", "5",
            "--factory", f"http_apps:{app}_asgi"]


def _waitress(app: str, port: int) -> list[str]:
    return [str(BIN / "waitress-serve"), "--threads", "8", f"--listen=127.0.0.1:{port}",
            "--channel-timeout=5", "--connection-limit=1000", "--call", f"http_apps:{app}_app"]


BASELINE = "gunicorn gthread, 4 threads (before)"
CANDIDATES = (
    Candidate(BASELINE, "gunicorn", _gthread),
    Candidate("tally serve: gunicorn + IngestWorker (gevent)", "gevent", _tally_serve),
    Candidate("granian WSGI", "granian", _granian),
    Candidate("uvicorn + a2wsgi", "a2wsgi", _uvicorn),
    Candidate("waitress, 1 process x 8 threads", "waitress", _waitress),
)


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
def serving(candidate: Candidate, app: str, redis_url: str, tmp: Path):
    """Run one candidate server with one app on a free port; yield (base URL, port)."""
    port = free_ports(1)[0]
    label = f"{candidate.module}-{app}"
    metrics_dir = tmp / f"metrics-{label}"
    metrics_dir.mkdir()
    env = {**os.environ, "TALLY_REDIS_URL": redis_url, "TALLY_INGEST_PORT": str(port),
           "TALLY_WRITE_TOKENS": TOKEN, "TALLY_READ_TOKENS": TOKEN,
           "TALLY_SERIES_HISTORY": "false", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "PYTHONPATH": os.pathsep.join([str(HTTP_APPS.parent), str(ROOT)])}
    log_path = tmp / f"serve-{label}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(candidate.argv(app, port), stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        await_ready(proc, candidate.name, lambda: requests.get(base + "/readyz", timeout=1).ok,
                    log_path, timeout=30)
        yield base, port
    finally:
        stop(proc)


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(base: str, batch: int, tmp: Path, prefix: str) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx responses) of wrk posting `batch`-event bodies."""
    script = tmp / f"{prefix}.lua"
    script.write_text(LUA % {"batch": batch, "prefix": prefix, "token": TOKEN})
    out = subprocess.run(["wrk", "-t", "1", "-c", str(CONNECTIONS[batch]), "-d", f"{SECONDS}s",
                          "--latency", "-s", str(script), base + "/v1/events"],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p99 = _milliseconds(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    bad = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return rate, p99, (int(errors[1]) if errors else 0) + (sum(map(int, bad.groups()))
                                                          if bad else 0)


def siege(base: str, port: int) -> dict:
    """A normal client's p99 and failures while 500 hostile connections are held."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with Siege("127.0.0.1", port, SIEGE, headers=headers) as hostile:
        results = timed_requests(base, SIEGE_SECONDS, headers)
    dropped = {kind: sum(1 for c in hostile.connections if c.kind == kind and c.held is not None)
               for kind in SIEGE}
    return {"siege_p99_ms": percentile([s for s, _ in results], 99) * 1000,
            "siege_failed": sum(1 for _, status in results if status != 200),
            "siege_requests": len(results),
            "dropped_slow_headers": dropped["slow-headers"], "dropped_idle": dropped["idle"],
            "dropped_slow_body": dropped["slow-body"]}


def run(settings=None) -> list[dict]:
    """Rows: the core alone, then each server x request size, then each server under siege."""
    with tempfile.TemporaryDirectory(prefix="tally-bench-http-") as name, _redis(settings) as url:
        tmp, client = Path(name), redis.Redis.from_url(url)
        try:
            apply_only, validate_apply = direct(client, 1000)
        finally:
            client.close()
        rows = [{"case": "core apply_batch, 1000-event batches", "events_per_s": apply_only,
                 "vs_core": 1.0},
                {"case": "core validate_batch + apply_batch", "events_per_s": validate_apply,
                 "vs_core": validate_apply / apply_only}]
        present = [c for c in CANDIDATES if importlib.util.find_spec(c.module)]
        rows += [{"case": f"{c.name}: not installed (pip install {c.module})"}
                 for c in CANDIDATES if c not in present]
        with ExitStack() as stack:
            bases = {(c.name, app): stack.enter_context(serving(c, app, url, tmp))
                     for c in present for app in ("tally", "hello")}
            samples: dict[tuple, list[tuple[float, float, int]]] = {}
            for i in range(RUNS):  # interleaved: every case once per round
                for c in present:
                    for app in ("tally", "hello"):
                        for batch in CONNECTIONS:
                            prefix = f"r{i}{c.module}{app}{batch}"
                            samples.setdefault((c.name, app, batch), []).append(
                                wrk(bases[c.name, app][0], batch, tmp, prefix))
            rows += _rate_rows(present, samples, apply_only)
            rows += [{"case": f"{c.name}: 500 slow connections, {SIEGE_SECONDS} s",
                      **siege(*bases[c.name, "tally"])} for c in present]
        return rows


def _rate_rows(present: list[Candidate], samples: dict, apply_only: float) -> list[dict]:
    def median(key: tuple, index: int) -> float:
        return statistics.median(sample[index] for sample in samples[key])

    rows = []
    for batch in CONNECTIONS:
        for c in present:
            for app in ("tally", "hello"):
                rate = median((c.name, app, batch), 0)
                row = {"case": f"{c.name}: {app}, {batch}-event requests",
                       "requests_per_s": rate, "events_per_s": rate * batch,
                       "p99_ms": median((c.name, app, batch), 1)}
                if (BASELINE, app, batch) in samples:
                    row["vs_gthread"] = rate / median((BASELINE, app, batch), 0)
                if app == "tally":
                    row["vs_hello"] = rate / median((c.name, "hello", batch), 0)
                    row["vs_core"] = rate * batch / apply_only
                row["non_2xx"] = sum(s[2] for s in samples[c.name, app, batch])
                rows.append(row)
    return rows


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
