"""The client through a Redis outage: 503 redis-unavailable is retried after its Retry-After.

A private redis-server is stopped under a running `tally serve`, so every
POST answers `503 redis-unavailable` with `Retry-After: 1`; the client's own
backoff (10-20 ms) would retry a hundred times in the outage, Retry-After
holds it to about one attempt a second. Once Redis is back (same port, same
append-only file) the queued events count exactly once.
"""

from __future__ import annotations

import json
import time

from tally.client import Backoff, Client
from tally.stack import services
from tally.stack.process import free_ports, stop
from tests.test_api_support import READ, WRITE, gunicorn

OUTAGE = 2.5


def refused_posts(log_path) -> int:
    """POST /v1/events answers with status 503 in a `tally serve` log."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{")]
    return sum(1 for line in lines if line.get("route") == "/v1/events"
               and line.get("status") == 503)


def test_an_outage_is_waited_out_by_retry_after_and_counts_once(tmp_path):
    port = free_ports(1)[0]
    node = services.redis(port, tmp_path / "redis")
    redis_proc = services.start(node, tmp_path / "redis.log")
    try:
        with gunicorn(f"redis://127.0.0.1:{port}", 1, tmp_path) as (base, _):
            client = Client(base, WRITE, read_token=READ, flush_interval=0.05,
                            backoff=Backoff(base=0.01, cap=0.02))
            client.count("views", "k", id="before")
            client.flush()
            stop(redis_proc, node.stop_signal)
            for i in range(5):
                client.count("views", "k", id=f"during-{i}")
            time.sleep(OUTAGE)
            assert client.pending() == 5
            redis_proc = services.start(node, tmp_path / "redis.log")
            client.flush(timeout=10)
            assert client.total("views", "k") == 6
            client.close()
            log = next(tmp_path.glob("serve-*.log"))
            assert 2 <= refused_posts(log) <= OUTAGE + 2
    finally:
        stop(redis_proc, node.stop_signal)
