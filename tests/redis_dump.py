"""Every key of a Redis, or of every primary of a Redis Cluster, byte for byte (no tests here).

`dump_all` takes DUMP (type, encoding and value) and the absolute expiry
time of each key, so two snapshots are equal only if nothing was written,
not even a TTL. Reading with DUMP changes nothing (PFCOUNT, for one, would
rewrite a HyperLogLog's cached cardinality).
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster


def primaries(client) -> list[redis.Redis]:
    """The one server, or a client per primary of a cluster."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def dump_all(client) -> dict[bytes, tuple[bytes, int]]:
    """{key: (DUMP, PEXPIRETIME)} over every primary."""
    state = {}
    for server in primaries(client):
        names = list(server.scan_iter(count=1000))
        pipe = server.pipeline(transaction=False)
        for name in names:
            pipe.dump(name)
            pipe.execute_command("PEXPIRETIME", name)
        replies = pipe.execute()
        for i, name in enumerate(names):
            state[name] = (replies[2 * i], replies[2 * i + 1])
    return state


def changed(before: dict, after: dict) -> list[bytes]:
    """Names of keys that differ between two snapshots (added, removed or rewritten)."""
    return sorted(name for name in before.keys() | after.keys()
                  if before.get(name) != after.get(name))
