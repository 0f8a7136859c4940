"""HyperLogLog unique users stay within the documented error (3 standard errors of 0.81%)."""

from __future__ import annotations

from tally.events import Event
from tally.ingest.counting import reads
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig

NOW = 1_800_000_000  # a day boundary, so minutes 0..59 of the batch share one hour and day
TOLERANCE = 3 * 0.0081
HOT = CountingConfig(hot_keys={("views", "hot"): 8})


def feed(client, config, key: str, users: range, minutes: int = 1) -> None:
    """One event per user, round-robin over `minutes` minutes, in 1,000-event batches."""
    events = [Event("views", key, NOW + 60 * (u % minutes), user=f"user-{u}") for u in users]
    for start in range(0, len(events), 1000):
        apply_batch(client, config, events[start:start + 1000], now=NOW + 3600)


def close(estimate: int, exact: int) -> bool:
    """Within three standard errors of HyperLogLog."""
    return abs(estimate - exact) <= TOLERANCE * exact


def test_one_minute_of_100k_users(redis_client):
    """100,000 distinct users in one key's minute."""
    config = CountingConfig()
    feed(redis_client, config, "k", range(100_000))
    assert close(reads.uniques(redis_client, config, "views", "k", "m", [NOW // 60]), 100_000)
    assert close(reads.uniques(redis_client, config, "views", "k", "d", [NOW // 86400]), 100_000)


def test_merged_over_buckets(redis_client):
    """PFCOUNT over several minutes merges them: overlapping users count once."""
    config = CountingConfig()
    feed(redis_client, config, "k", range(60_000), minutes=6)
    feed(redis_client, config, "k", range(30_000, 90_000), minutes=6)
    minutes = [NOW // 60 + i for i in range(6)]
    assert close(reads.uniques(redis_client, config, "views", "k", "m", minutes), 90_000)
    assert close(reads.uniques(redis_client, config, "views", "k", "m", minutes[:3]), 45_000)


def test_hot_key_across_cluster_slots(redis_cluster_client):
    """A hot key spread over 8 shards (several nodes) merges its HyperLogLogs across slots."""
    feed(redis_cluster_client, HOT, "hot", range(50_000), minutes=2)
    minutes = [NOW // 60, NOW // 60 + 1]
    assert close(reads.uniques(redis_cluster_client, HOT, "views", "hot", "m", minutes), 50_000)
    assert close(reads.uniques(redis_cluster_client, HOT, "views", "hot", "h", [NOW // 3600]),
                 50_000)
    assert reads.total(redis_cluster_client, HOT, "views", "hot") == 50_000
    assert redis_cluster_client.keys("{tmp:*") == []  # the merge's temporary copies are gone
