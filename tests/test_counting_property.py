"""Property tests: random streams through apply_batch read back exactly like the reference model."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from tally.events import validate_batch
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tests.reference_model import ReferenceModel, mismatches

NOW = 1_800_000_123  # not aligned to a minute, hour or day: buckets straddle boundaries
LATENESS, SKEW = 86_400, 300
# Ages in seconds (negative = ahead of the server clock, within the skew).
AGES = [0, 1, 59, 60, 61, 123, 3599, 3600, 3724, 40_000, 86_300, 86_394, -1, -299, -300]
HOSTILE = ["video:42", "a", "b", "{t:views:3}", "}{", "{", "a b", " ", "ü", "😀", "m:1",
           "total", "hot", "k" * 256, "x:{y}:z", "日本"]
USERS = [None, "u1", "u2", "u3", "user with space", "🙂", "{u}"]
VALUES = [1, 1, 1, 2, 7, 1000, 2**40]

keys = st.one_of(st.sampled_from(HOSTILE),
                 st.text(alphabet=":{} aé😀", min_size=1, max_size=4).filter(str.isprintable))
raw_events = st.lists(st.fixed_dictionaries(
    {"counter": st.sampled_from(["views", "plays"]), "key": keys,
     "ts": st.sampled_from(AGES).map(lambda age: NOW - age), "value": st.sampled_from(VALUES)},
    optional={"user": st.sampled_from(USERS[1:]), "has_id": st.booleans()},
), min_size=1, max_size=40)


def stream(draw_raws, rng: random.Random) -> list[dict]:
    """Give events unique ids, add retries (exact copies), shuffle the lot."""
    events = []
    for n, raw in enumerate(draw_raws):
        event = {k: v for k, v in raw.items() if k != "has_id"}
        if raw.get("has_id"):
            event["id"] = f"id-{n}"
        events.append(event)
    retries = [dict(e) for e in events if "id" in e and rng.random() < 0.5]
    retries += [dict(e) for e in retries if rng.random() < 0.3]
    events += retries
    rng.shuffle(events)
    return events


def split(events: list, rng: random.Random) -> list[list]:
    """Cut a stream into random batches (sizes 1..len)."""
    cuts = sorted(rng.sample(range(1, len(events)), k=rng.randint(0, len(events) - 1)))
    return [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]


def flush(client) -> None:
    """Empty Redis between hypothesis examples (the fixture only flushes after the test)."""
    if isinstance(client, RedisCluster):
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        client.flushall()


def run_stream(client, config: CountingConfig, raws, seed: int) -> None:
    """Apply a stream in random batches to Redis and the model; assert every read matches."""
    flush(client)
    rng = random.Random(seed)
    model = ReferenceModel(dedup_window=config.dedup_window)
    for chunk in split(stream(raws, rng), rng):
        now = NOW + rng.randint(0, 5)  # a batch arrives a little later than the previous one
        events = validate_batch(chunk, now, LATENESS, SKEW)
        assert tuple(apply_batch(client, config, events, now=now)) == model.apply(events, now)
    for counter in ("views", "plays"):
        assert mismatches(client, config, model, counter, k=5) == []


CONFIGS = {
    "exact": CountingConfig(),
    "few_shards": CountingConfig(shards=2),
    "hot": CountingConfig(hot_keys={("views", "hot"): 4, ("views", "a"): 16}),
    "bloom": CountingConfig(dedup_mode="bloom", bloom_capacity=1_000_000, bloom_error_rate=1e-9),
}
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", CONFIGS)
@PROPERTY
@given(raws=raw_events, seed=st.integers(0, 2**32))
def test_stream_matches_model_on_one_redis(redis_client, name, raws, seed):
    """Duplicates, retries, reordering, lateness and hostile keys count exactly (single Redis)."""
    run_stream(redis_client, CONFIGS[name], raws, seed)


@pytest.mark.parametrize("name", CONFIGS)
@PROPERTY
@given(raws=raw_events, seed=st.integers(0, 2**32))
def test_stream_matches_model_on_cluster(redis_cluster_client, name, raws, seed):
    """The same property on a three-primary Redis Cluster, one script call per hash tag."""
    run_stream(redis_cluster_client, CONFIGS[name], raws, seed)
