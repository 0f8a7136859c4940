"""The one way Tally's processes open Redis: a single server or a cluster, with timeouts."""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from tally.settings import Settings


def connect(settings: Settings, timeout: float = 5.0) -> redis.Redis | RedisCluster:
    """A bytes-returning client for settings.redis_url; every call gives up after `timeout` s."""
    options = {"socket_timeout": timeout, "socket_connect_timeout": min(timeout, 2.0)}
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, health_check_interval=30, **options)


def disconnect(client: redis.Redis | RedisCluster) -> None:
    """Close every connection of a client, in use or idle.

    RedisCluster.close() can leave a node's connection open, to be found by
    the garbage collector later; disconnecting each node's pool closes all.
    """
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
    client.close()
