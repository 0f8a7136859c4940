"""The ingest server is SIGKILLed and restarted under a counting client: every event counts once.

Several application threads count through one Client while `tally serve`
(master and workers, its whole process group) is killed mid-stream, twice, and
started again on the same port. Batches in flight when it dies may or may
not have been applied; the client resends them with the same ids, so the
totals afterwards equal exactly what the threads counted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager

import requests

from tally.client import Backoff, Client
from tally.stack.process import await_ready, free_ports, stop
from tests.test_api_support import READ, WRITE

THREADS, KEYS = 4, 30


def start(redis_url: str, port: int, log_path) -> subprocess.Popen:
    """`tally serve` with 2 workers on a given port, in its own process group, once ready."""
    env = {**os.environ, "TALLY_REDIS_URL": redis_url, "TALLY_INGEST_PORT": str(port),
           "TALLY_WRITE_TOKENS": WRITE, "TALLY_READ_TOKENS": READ,
           "TALLY_SERIES_HISTORY": "false"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tally.stack.cli", "serve", "--workers", "2"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    await_ready(proc, "tally serve", lambda: requests.get(
        f"http://127.0.0.1:{port}/readyz", timeout=1).ok, log_path, timeout=30)
    return proc


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the server's whole process group: no worker finishes its request."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def counting_threads(client: Client, counted: Counter):
    """THREADS threads counting over KEYS keys, about 1,000 events/s each, until the block ends."""
    lock, done = threading.Lock(), threading.Event()

    def run(seed: int) -> None:
        rng, mine = random.Random(seed), Counter()
        while not done.is_set():
            key, value = f"video:{rng.randrange(KEYS)}", rng.randint(1, 3)
            client.count("views", key, value=value, user=f"u{rng.randrange(50)}")
            mine[key] += value
            time.sleep(0.001)  # a stream, not one burst
        with lock:
            counted.update(mine)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join(30)


def test_counts_are_exact_across_server_kills(redis_url, redis_client, tmp_path):
    port = free_ports(1)[0]
    proc = start(redis_url, port, tmp_path / "serve.log")
    client = Client(f"http://127.0.0.1:{port}", WRITE, read_token=READ, batch_size=200,
                    flush_interval=0.05, backoff=Backoff(base=0.02, cap=0.5))
    counted: Counter = Counter()
    try:
        with counting_threads(client, counted):
            for _ in range(2):
                time.sleep(0.5)
                kill(proc)
                time.sleep(0.3)  # batches meet a closed port meanwhile
                proc = start(redis_url, port, tmp_path / "serve.log")
            time.sleep(0.5)
        client.flush(timeout=60)
        keys = [f"video:{i}" for i in range(KEYS)]
        assert client.totals("views", keys) == {key: counted[key] for key in keys}
        assert sum(counted.values()) > 5000
    finally:
        client.close(timeout=10)
        stop(proc)
