"""Scrape time of the exporter with 100,000 active keys, against an empty Redis and a bare PING.

Run: bench/run -k exporter   (the Redis database is flushed before and after)
"""

from __future__ import annotations

import statistics
import time

import redis
from prometheus_client import CollectorRegistry, generate_latest

from tally.events import Event
from tally.exporter.collector import TallyCollector
from tally.ingest.counting import leaderboard
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig

NEEDS = {"redis"}
KEYS, SCRAPES = 100_000, 20
COUNTERS = ("views", "plays", "likes", "signups")


def ingest(client, config: CountingConfig, keys: int, batch: int = 5_000) -> None:
    """Count one event per key (spread over COUNTERS, with users and ids), plus 20 boards."""
    now = int(time.time())
    for start in range(0, keys, batch):
        events = [Event(COUNTERS[i % len(COUNTERS)], f"item:{i}", now - i % 3600, 1 + i % 3,
                        f"id-{i}", f"user-{i % 50_000}")
                  for i in range(start, min(keys, start + batch))]
        apply_batch(client, config, events, now)
    for board in range(20):
        for member in range(50):
            leaderboard.update(client, f"board{board}", f"m{member}", member)


def time_scrapes(client, config: CountingConfig, scrapes: int) -> list[float]:
    """Wall time of each full scrape (collect + text exposition)."""
    registry = CollectorRegistry()
    registry.register(TallyCollector(client, config, top_n=10))
    durations = []
    for _ in range(scrapes):
        started = time.perf_counter()
        generate_latest(registry)
        durations.append(time.perf_counter() - started)
    return durations


def time_pings(client, count: int) -> list[float]:
    """Wall time of a bare PING round trip."""
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        client.ping()
        durations.append(time.perf_counter() - started)
    return durations


def _row(case: str, samples: list[float], baseline: float) -> dict:
    median = statistics.median(samples)
    p95 = sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]
    return {"case": case, "samples": len(samples), "median_us": median * 1e6,
            "p95_us": p95 * 1e6, "x_ping": median / baseline}


def run(settings) -> list[dict]:
    """Rows: PING round trip (baseline), scrape of an empty Redis, scrape with KEYS keys."""
    config = CountingConfig()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.flushall()
        ping = time_pings(client, 200)
        empty = time_scrapes(client, config, SCRAPES)
        ingest(client, config, KEYS)
        full = time_scrapes(client, config, SCRAPES)
        size = client.dbsize()
        client.flushall()
    finally:
        client.close()
    base = statistics.median(ping)
    return [_row("PING round trip", ping, base),
            _row("scrape, empty Redis", empty, base),
            _row(f"scrape, {KEYS:,} keys ({size:,} Redis keys)", full, base)]
