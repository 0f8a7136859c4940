"""Bulk reads of totals: reads.totals on one Redis and a cluster, GET ...?key=a&key=b."""

from __future__ import annotations

import time

import pytest

from tally.events import Event
from tally.ingest.api import close_app
from tally.ingest.api.openapi import MAX_BULK_KEYS
from tally.ingest.counting import reads
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tests.test_api_support import R, W, make_app

NOW = int(time.time())
CONFIG = CountingConfig(hot_keys={("views", "hot"): 4})


def count(client, config, counts: dict[str, int]) -> None:
    """Count `n` events of value 1 for each key (hot keys land on several shards)."""
    events = [Event(counter="views", key=key, ts=NOW, value=1, id=f"{key}-{i}")
              for key, n in counts.items() for i in range(n)]
    apply_batch(client, config, events, now=NOW)


def hmget_calls(client, cluster: bool) -> int:
    """HMGET calls the server (every primary of a cluster) ran since CONFIG RESETSTAT."""
    stats = client.info("commandstats", target_nodes="primaries") if cluster else {
        "one": client.info("commandstats")}
    if not cluster:
        return stats["one"].get("cmdstat_hmget", {}).get("calls", 0)
    return sum(node.get("cmdstat_hmget", {}).get("calls", 0) for node in stats.values())


@pytest.mark.parametrize("cluster", [False, True])
def test_totals_are_each_keys_total_in_the_order_asked(redis_client, redis_cluster_client,
                                                       cluster):
    client = redis_cluster_client if cluster else redis_client
    counts = {"a": 3, "hot": 40, "b/c?d": 1, "ü": 2}
    count(client, CONFIG, counts)
    asked = ["ü", "missing", "hot", "a", "b/c?d", "a"]
    assert reads.totals(client, CONFIG, "views", asked) == [2, 0, 40, 3, 1, 3]
    assert [reads.total(client, CONFIG, "views", k) for k in asked] == [2, 0, 40, 3, 1, 3]
    # The hot key really is spread: its count is summed over more than one shard.
    assert reads.totals(client, CountingConfig(), "views", ["hot"]) < [40]
    assert reads.totals(client, CONFIG, "views", []) == []


@pytest.mark.parametrize("cluster", [False, True])
def test_a_thousand_keys_cost_one_hmget_per_shard_hash(redis_client, redis_cluster_client,
                                                       cluster):
    """One pipeline of HMGETs, one per shard's total hash: 16, however many keys are read."""
    client = redis_cluster_client if cluster else redis_client
    names = [f"video:{i}" for i in range(MAX_BULK_KEYS)]
    count(client, CONFIG, {name: i % 3 for i, name in enumerate(names)})
    if cluster:
        client.config_resetstat(target_nodes="primaries")
    else:
        client.config_resetstat()
    assert reads.totals(client, CONFIG, "views", names) == [i % 3 for i in range(len(names))]
    assert hmget_calls(client, cluster) == CONFIG.shards


@pytest.fixture
def bulk_api(redis_url, redis_client):
    """A test client of an app on the test Redis with the hot key views=hot spread over 4."""
    app = make_app(redis_url, hot_keys="views=hot=4")
    yield app.test_client()
    close_app(app)


def post(api, events: list[dict]) -> None:
    """Post events with the write token."""
    assert api.post("/v1/events", json=events, headers=W).status_code == 200


def test_several_keys_answer_their_totals_in_request_order(bulk_api):
    post(bulk_api, [{"counter": "views", "key": k, "id": f"{k}{i}"}
                    for k, n in (("a", 2), ("hot", 9), ("x&y=z", 1)) for i in range(n)])
    response = bulk_api.get("/v1/counters/views", headers=R, query_string=[
        ("key", "hot"), ("key", "nothing"), ("key", "x&y=z"), ("key", "a")])
    assert response.status_code == 200
    assert response.json == {"counter": "views", "keys": [
        {"key": "hot", "total": 9}, {"key": "nothing", "total": 0},
        {"key": "x&y=z", "total": 1}, {"key": "a", "total": 2}]}


def test_one_key_keeps_its_answer(bulk_api):
    post(bulk_api, [{"counter": "views", "key": "a", "id": "1", "user": "u"}])
    body = bulk_api.get("/v1/counters/views?key=a", headers=R).json
    assert body == {"counter": "views", "key": "a", "total": 1,
                    "unique_views": {"today": 1, "all_time": 1}, "uniques": {"hour": 1, "day": 1}}


def test_the_limit_is_a_thousand_keys(bulk_api):
    ok = bulk_api.get("/v1/counters/views", headers=R,
                      query_string=[("key", f"k{i}") for i in range(MAX_BULK_KEYS)])
    assert [e["total"] for e in ok.json["keys"]] == [0] * MAX_BULK_KEYS


@pytest.mark.parametrize(("query", "detail"), [
    ([("key", f"k{i}") for i in range(MAX_BULK_KEYS + 1)],
     "key is given 1001 times; at most 1000 keys per request"),
    ([("key", "a"), ("key", "")], "key[1] must not be empty"),
    ([("key", "a"), ("key", "b"), ("key", "c\n")], "key[2] must be printable UTF-8 (no control "
                                                    "characters)"),
    ([("key", "a"), ("key", "é" * 129)], "key[1] must be at most 256 bytes of UTF-8"),
    ([("key", "")], "key must not be empty"),
])
def test_bad_bulk_reads_are_precise_400s(bulk_api, query, detail):
    response = bulk_api.get("/v1/counters/views", headers=R, query_string=query)
    assert (response.status_code, response.json["type"], response.json["detail"]) == (
        400, "urn:tally:problem:invalid-parameter", detail)


def test_a_bulk_read_on_a_redis_cluster(redis_cluster_url, redis_cluster_client):
    app = make_app(redis_cluster_url, redis_cluster=True, hot_keys="views=hot=4")
    api = app.test_client()
    post(api, [{"counter": "views", "key": f"k{i % 5}", "id": str(i)} for i in range(50)]
         + [{"counter": "views", "key": "hot", "id": str(i)} for i in range(7)])
    body = api.get("/v1/counters/views?key=k4&key=hot&key=k0&key=none", headers=R).json
    assert [(e["key"], e["total"]) for e in body["keys"]] == [
        ("k4", 10), ("hot", 7), ("k0", 10), ("none", 0)]
    close_app(app)
