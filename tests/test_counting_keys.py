"""Key design: hostile keys never collide or move slots, and every per-time key expires."""

from __future__ import annotations

import re

import pytest

from tally import keys
from tally.events import MAX_VALUE, Event
from tally.ingest.counting import reads
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig

NOW = 1_800_000_123
# Pairs that a naive "kind:time:key" scheme or a brace in the key could confuse.
HOSTILE = ["a", "a:b", "m:1", "1:a", "{t:views:0}", "{x}", "}{", "{", "}", "a b", " ", "ü",
           "😀", "total", "top:all", "uv:1:a", "日本語", "k" * 256]
NO_TTL = {"total", "top:all", "uvc:all", "stats", "log", "dirty:timescale", "dirty:influx"}


def hostile_batch() -> list[Event]:
    """Key i gets i + 1 events, each with an id and a user, at two minutes of two days."""
    return [Event("views", key, NOW - (n % 2) * 86_400, id=f"{key}/{n}", user=f"u{n % 3}")
            for i, key in enumerate(HOSTILE) for n in range(i + 1)]


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_hostile_keys_do_not_collide(request, cluster):
    """Each hostile key reads back exactly its own counts."""
    client = request.getfixturevalue("redis_cluster_client" if cluster else "redis_client")
    config = CountingConfig()
    apply_batch(client, config, hostile_batch(), now=NOW)
    for i, key in enumerate(HOSTILE):
        assert reads.total(client, config, "views", key) == i + 1
        assert reads.bucket_values(client, config, "views", key, "d", [NOW // 86400]) == {
            NOW // 86400: (i + 2) // 2}
    assert reads.top(client, config, "views", 3) == [(k, 18 - i) for i, k in
                                                     enumerate(reversed(HOSTILE[-3:]))]


def test_every_key_lives_in_its_tags_slot(redis_cluster_client):
    """CLUSTER KEYSLOT of every stored name equals that of its `{t:counter:shard}` tag."""
    apply_batch(redis_cluster_client, CountingConfig(), hostile_batch(), now=NOW)
    names = [n.decode() for n in redis_cluster_client.scan_iter(count=1000)]
    tally_names = [n for n in names if n.startswith("{t:")]
    assert len(tally_names) > 100
    for name in tally_names:
        tag = name[:name.index("}") + 1]
        slot = redis_cluster_client.cluster_keyslot
        assert slot(name) == slot(tag), name


def expected_ttl(config: CountingConfig, rest: str) -> int | None:
    """TTL docs/redis-keys.md promises for a name (after its tag); None = no TTL."""
    if rest in NO_TTL:
        return None
    kind = rest.split(":", 1)[0]
    resolution = rest.split(":")[1] if kind in ("u", "cu") else kind
    by_resolution = dict(zip("mhd", config.ttls, strict=True))
    if kind in ("m", "h", "d", "u", "cu"):
        return by_resolution[resolution]
    return {"uvc": config.ttl(keys.DAY), "top": config.ttl(keys.DAY), "uv": config.viewers_ttl,
            "ids": 2 * config.dedup_window, "bloom": 2 * config.dedup_window}[kind]


def documented_ttl_kinds(client, config: CountingConfig) -> set[str]:
    """Scan every key: per-time keys carry their documented TTL, the rest none; return the kinds."""
    kinds = set()
    for name in client.scan_iter(count=1000):
        name, ttl = name.decode(), client.ttl(name)
        if name == keys.COUNTERS:
            assert ttl == -1
            continue
        rest = re.fullmatch(r"\{t:views:\d+\}(.*)", name, re.S).group(1)
        kinds.add(rest.split(":")[0])
        want = expected_ttl(config, rest)
        if want is None:
            assert ttl == -1, name
        else:
            assert want - 5 <= ttl <= max(want, config.viewers_ttl + keys.DAY), name
        if rest.split(":")[0] in ("m", "h", "d", "u", "cu", "uvc", "top") and want is not None:
            assert ttl > config.accepted_lateness + config.outage_budget, name
    return kinds


@pytest.mark.parametrize("mode", ["exact", "bloom"])
def test_every_per_time_key_expires(redis_client, mode):
    """Scan every key after a batch: per-time keys carry their documented TTL, the rest none."""
    config = CountingConfig(dedup_mode=mode)
    apply_batch(redis_client, config, hostile_batch(), now=NOW)
    assert documented_ttl_kinds(redis_client, config) >= {
        "m", "h", "d", "u", "uv", "uvc", "top", "total", "stats", "dirty",
        "ids" if mode == "exact" else "bloom"}


def test_keys_first_created_by_a_later_batch_expire_too(redis_client):
    """The script skips EXPIRE for keys that exist: keys a later batch creates still get a TTL."""
    config = CountingConfig(shards=1)
    batches = [
        [Event("views", k, NOW) for k in ("a", "b")],  # buckets, no HyperLogLog or viewer set
        [Event("views", k, NOW, user="u1") for k in ("a", "b")],  # bucket fields exist already
        [Event("views", "a", NOW, user="u2", id="x"), Event("views", "c", NOW - 86_400)],
        [Event("views", "d", NOW - 7200, value=MAX_VALUE)] * 3,  # new hashes created by a spill
        [Event("views", "b", NOW - 3 * 3600, user="u3")],
    ]
    for batch in batches:
        apply_batch(redis_client, config, batch, now=NOW)
    assert documented_ttl_kinds(redis_client, config) >= {"m", "h", "d", "u", "uv", "uvc", "cu"}
