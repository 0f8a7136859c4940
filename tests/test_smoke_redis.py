"""Smoke tests: the Redis fixtures run real servers."""

from redis.cluster import RedisCluster


def test_redis_round_trip_with_append_only_file(redis_client):
    redis_client.incrby(b"smoke", 5)
    assert redis_client.get(b"smoke") == b"5"
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}


def test_redis_client_starts_empty(redis_client):
    assert redis_client.dbsize() == 0


def test_cluster_spreads_keys_over_three_primaries(redis_cluster_client):
    keys = ["views:a", "views:b", "views:c", "views:d", "views:e", "views:f"]
    for i, key in enumerate(keys):
        redis_cluster_client.set(key, i)
    slots = {key: redis_cluster_client.keyslot(key) for key in keys}
    nodes = {redis_cluster_client.get_node_from_key(key).port for key in keys}
    assert slots["views:a"] == redis_cluster_client.cluster_keyslot("views:a")
    assert len(redis_cluster_client.get_primaries()) == 3
    assert len(nodes) == 3
    assert [redis_cluster_client.get(key) for key in keys] == [b"0", b"1", b"2", b"3", b"4", b"5"]


def test_cluster_hash_tags_share_a_slot(redis_cluster_client):
    assert redis_cluster_client.keyslot("{views}:a") == redis_cluster_client.keyslot("{views}:b")
    assert redis_cluster_client.dbsize(target_nodes=RedisCluster.PRIMARIES) == 0
