"""Helpers shared by the tests of the ingest HTTP API (no tests here)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tally.ingest.api import create_app
from tally.settings import load_settings
from tally.stack.process import await_ready, free_ports, stop

WRITE, READ = "w-token", "r-token"
W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}


def settings(redis_url: str, **overrides):
    """Settings for a test app: tokens, the test Redis, no database unless given."""
    base = {"redis_url": redis_url, "write_tokens": (WRITE,), "read_tokens": (READ,),
            "series_history": False, "rate_limits": "api=3/60,login=1/1"}
    return load_settings({}, **{**base, **overrides})


def make_app(redis_url: str, **overrides):
    """An app on the test Redis (close it with tally.ingest.api.close_app)."""
    return create_app(settings(redis_url, **overrides))


def ndjson(events: list[dict]) -> bytes:
    """Events as newline-delimited JSON."""
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def gzipped(data: bytes) -> bytes:
    """Gzip a body."""
    return gzip.compress(data)


def worker_pids(master_pid: int, expected: int, timeout: float = 10.0) -> list[int]:
    """Pids of a gunicorn master's worker processes, once `expected` of them run."""
    deadline = time.monotonic() + timeout
    while True:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
        if len(children) == expected or time.monotonic() > deadline:
            return sorted(int(pid) for pid in children)
        time.sleep(0.1)


def snapshot(client) -> dict:
    """Every key of a Redis database with its type, value and whether it expires."""
    state = {}
    for name in client.scan_iter(count=1000):
        kind = client.type(name).decode()
        value = {"string": client.get, "hash": client.hgetall, "set": client.smembers,
                 "zset": lambda n: client.zrange(n, 0, -1, withscores=True),
                 "stream": client.xrange}[kind](name)
        state[name] = (kind, value, client.ttl(name) > 0)
    return state


@contextmanager
def gunicorn(redis_url: str, workers: int, tmp: Path, **env_settings):
    """Run `tally serve` on a free port; yield (base URL, master process); stop it afterwards."""
    port = free_ports(1)[0]
    env = {**os.environ, "TALLY_REDIS_URL": redis_url, "TALLY_INGEST_PORT": str(port),
           "TALLY_WRITE_TOKENS": WRITE, "TALLY_READ_TOKENS": READ,
           "TALLY_SERIES_HISTORY": "false"}
    env.update({f"TALLY_{k.upper()}": str(v) for k, v in env_settings.items()})
    log_path = tmp / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tally.stack.cli", "serve", "--workers", str(workers)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        await_ready(proc, "tally serve", lambda: requests.get(base + "/readyz", timeout=1).ok,
                    log_path, timeout=30)
        yield base, proc
    finally:
        stop(proc)
