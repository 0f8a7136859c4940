"""Concurrent writers: overlapping retried batches count each id once; rate limits admit exactly."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.cluster import RedisCluster

from tally.events import validate_batch
from tally.ingest.counting import ratelimit, reads
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig

NOW = 1_800_000_123
IDS = 3000
WORKERS = 4
CONFIG = CountingConfig(hot_keys={("views", "hot"): 4})
SPAWN = multiprocessing.get_context("spawn")


def connect(url: str, cluster: bool):
    """A fresh client per process (connections must not cross a fork)."""
    return RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)


def raw_event(n: int) -> dict:
    """Event number n: 30 keys (one hot), 100 users, unique id."""
    key = "hot" if n % 5 == 0 else f"k{n % 30}"
    return {"counter": "views", "key": key, "id": f"id-{n}", "user": f"u{n % 100}", "ts": NOW}


def apply_all(url: str, cluster: bool, seed: int) -> tuple[int, int]:
    """Apply every event in this worker's own order and batch sizes; (applied, duplicates)."""
    rng = random.Random(seed)
    order = list(range(IDS))
    rng.shuffle(order)
    client, applied, duplicates, start = connect(url, cluster), 0, 0, 0
    try:
        while start < IDS:
            size = rng.randint(1, 400)
            events = validate_batch([raw_event(n) for n in order[start:start + size]],
                                    NOW, 86400, 300)
            result = apply_batch(client, CONFIG, events, now=NOW)
            applied, duplicates = applied + result.applied, duplicates + result.duplicates
            start += size
    finally:
        client.close()
    return applied, duplicates


def expected_total(key: str) -> int:
    """How many distinct ids carry this key."""
    return sum(1 for n in range(IDS) if raw_event(n)["key"] == key)


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_overlapping_workers_count_each_id_once(request, cluster):
    """Four processes applying the same ids concurrently: every id counts exactly once."""
    client = request.getfixturevalue("redis_cluster_client" if cluster else "redis_client")
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    with SPAWN.Pool(WORKERS) as pool:
        results = pool.starmap(apply_all, [(url, cluster, seed) for seed in range(WORKERS)])
    assert sum(a for a, _ in results) == IDS
    assert sum(d for _, d in results) == (WORKERS - 1) * IDS
    for key in ["hot", "k1", "k29"]:
        assert reads.total(client, CONFIG, "views", key) == expected_total(key)
    assert reads.unique_views(client, CONFIG, "views", "hot", NOW // 86400) == 20


def hits(url: str, calls: int) -> int:
    """Call ratelimit.hit `calls` times from this process; return how many were admitted."""
    client = redis.Redis.from_url(url)
    try:
        return sum(ratelimit.hit(client, "api", "alice", 50, 60).allowed for _ in range(calls))
    finally:
        client.close()


def test_rate_limit_is_exact_across_processes(redis_client, redis_url):
    """Four processes, 400 calls, limit 50 per window: exactly 50 admitted."""
    with SPAWN.Pool(4) as pool:
        assert sum(pool.starmap(hits, [(redis_url, 100)] * 4)) == 50
    decision = ratelimit.hit(redis_client, "api", "alice", 50, 60)
    assert (decision.allowed, decision.remaining) == (False, 0)
    assert 59 < decision.reset_after <= 60


def test_rate_limit_is_exact_across_threads(redis_client):
    """Eight threads hammering one subject: exactly the limit is admitted, then nothing."""
    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(lambda _: ratelimit.hit(redis_client, "api", "bob", 20, 60).allowed,
                                range(200)))
    assert admitted == 20


def test_rate_limit_slides(redis_client):
    """Once the window has passed, requests are admitted again; remaining counts down."""
    assert [ratelimit.hit(redis_client, "t", "s", 2, 0.2).remaining for _ in range(3)] == [1, 0, 0]
    time.sleep(0.25)
    assert ratelimit.hit(redis_client, "t", "s", 2, 0.2).allowed


def textbook_count(client, key: str, window_ms: int, now_ms: int) -> int:
    """Textbook step 1: trim the window and count it (a separate round trip)."""
    client.zremrangebyscore(key, "-inf", now_ms - window_ms)
    return client.zcard(key)


def textbook_add(client, key: str, now_ms: int) -> None:
    """Textbook step 2: add the request, member = timestamp string."""
    client.zadd(key, {str(now_ms): now_ms})


def test_textbook_limiter_over_admits_and_loses(redis_client):
    """The textbook version, with the interleaving concurrency allows, is not exact.

    Eight callers all count before any of them adds (a barrier forces the
    interleaving that real load produces by chance): all eight are admitted
    against a limit of 3, and the same-millisecond members collapse into one
    entry. ratelimit.hit under the same threads admits exactly 3.
    """
    barrier, now_ms = threading.Barrier(8), 1_800_000_000_000

    def caller(_):
        admitted = textbook_count(redis_client, "textbook", 60_000, now_ms) < 3
        barrier.wait()
        if admitted:
            textbook_add(redis_client, "textbook", now_ms)
        return admitted

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(caller, range(8))) == 8
    assert redis_client.zcard("textbook") == 1
    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(lambda _: ratelimit.hit(redis_client, "x", "y", 3, 60).allowed,
                            range(8))) == 3
