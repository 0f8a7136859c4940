"""Writes follow a Redis Cluster's MOVED and ASK answers once, and count once.

The slot of one tag is moved (or put in migration) on the session cluster
while the client's slot table still names the old node; each test puts the
slot back where it was.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from redis.cluster import RedisCluster

from tally import keys
from tally.errors import NotAppliedError
from tally.events import Event
from tally.ingest.counting import reads
from tally.ingest.counting.batch import BatchResult, apply_batch
from tally.ingest.counting.config import CountingConfig

NOW = 1_800_000_123
CONFIG = CountingConfig()
TAG = keys.tag("views", keys.key_shard("k", CONFIG.shards))
BATCH = [Event("views", "k", NOW, id="a", user="u"), Event("views", "k", NOW)]


def node_ids(cluster: RedisCluster) -> dict[str, str]:
    """Cluster node id of every primary, by host:port name."""
    return {node.name: cluster.get_redis_connection(node).execute_command("CLUSTER", "MYID")
            .decode() for node in cluster.get_primaries()}


def setslot(cluster: RedisCluster, node, *args) -> None:
    """CLUSTER SETSLOT on one node."""
    cluster.get_redis_connection(node).execute_command("CLUSTER", "SETSLOT", *args)


@contextmanager
def slot_of_tag(cluster: RedisCluster):
    """(slot, owner, other primary); afterwards the slot is empty and the owner's again."""
    slot = cluster.keyslot(TAG + "stats")
    owner = cluster.get_node_from_key(TAG + "stats")
    other = next(n for n in cluster.get_primaries() if n.name != owner.name)
    ids = node_ids(cluster)
    try:
        yield slot, owner, other
    finally:
        for node in cluster.get_primaries():
            cluster.get_redis_connection(node).flushall()
        for node in cluster.get_primaries():
            setslot(cluster, node, slot, "NODE", ids[owner.name])
        cluster.nodes_manager.initialize()


def keys_on(cluster: RedisCluster, node, slot: int) -> int:
    """How many keys of the slot one node holds (whoever owns the slot)."""
    return cluster.get_redis_connection(node).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)


def test_a_moved_slot_is_followed_and_the_batch_counts_once(redis_cluster_client):
    cluster = redis_cluster_client
    with slot_of_tag(cluster) as (slot, owner, other):
        target = node_ids(cluster)[other.name]
        for node in cluster.get_primaries():
            setslot(cluster, node, slot, "NODE", target)
        # The client still routes the tag to `owner`, which answers MOVED: nothing ran there.
        assert cluster.get_node_from_key(TAG + "stats").name == owner.name
        assert apply_batch(cluster, CONFIG, BATCH, now=NOW) == BatchResult(2, 0)
        assert keys_on(cluster, owner, slot) == 0 and keys_on(cluster, other, slot) > 0
        assert reads.total(cluster, CONFIG, "views", "k") == 2


def test_an_ask_during_a_migration_is_followed_and_the_batch_counts_once(redis_cluster_client):
    """ASKING + EVALSHA on the importing node; what it cannot serve yet is refused whole."""
    cluster = redis_cluster_client
    with slot_of_tag(cluster) as (slot, owner, other):
        ids = node_ids(cluster)
        setslot(cluster, other, slot, "IMPORTING", ids[owner.name])
        setslot(cluster, owner, slot, "MIGRATING", ids[other.name])
        # The slot's keys are missing on `owner`, so it answers ASK. Without users the plan
        # needs single-key reads only, which the importing node serves.
        plain = [Event("views", "k", NOW, id="a"), Event("views", "k", NOW)]
        assert apply_batch(cluster, CONFIG, plain, now=NOW) == BatchResult(2, 0)
        assert apply_batch(cluster, CONFIG, plain, now=NOW + 1) == BatchResult(1, 1)
        assert keys_on(cluster, owner, slot) == 0
        pipe = cluster.get_redis_connection(other).pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.hget(TAG + "total", "k")
        assert pipe.execute()[1] == b"3"
        # A multi-key read over keys not there yet (viewer sets) is refused before any write.
        before = keys_on(cluster, other, slot)
        with pytest.raises(NotAppliedError) as caught:
            apply_batch(cluster, CONFIG, [Event("views", "k", NOW, id="b", user="u")], now=NOW + 2)
        assert caught.value.reason == "cluster-unavailable"
        assert (keys_on(cluster, owner, slot), keys_on(cluster, other, slot)) == (0, before)
