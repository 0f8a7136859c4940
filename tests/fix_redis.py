"""Redis fixtures: one server and one three-primary cluster per session, flushed after each test.

Both require the session's generated password (requirepass), as `tally up`'s
Redis does; the URLs they yield carry it.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import redis
from redis.cluster import RedisCluster

from tally.redis_connect import disconnect
from tally.stack import services
from tally.stack.cluster import create_cluster
from tally.stack.process import free_ports
from tally.stack.runner import STACK


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory, stack_secrets) -> str:
    """URL (with the password) of a session-wide redis-server, appendonly yes, on a free port."""
    root = tmp_path_factory.mktemp("redis")
    settings = stack_secrets.with_(data_dir=root, redis_port=free_ports(1)[0],
                                   redis_maxmemory="0")
    entry = next(e for e in STACK if e.name == "redis")
    with services.running(entry.build(settings), root / "log"):
        yield settings.redis_url


@pytest.fixture
def redis_client(redis_url) -> redis.Redis:
    """A bytes-returning client for redis_url on an empty server, flushed again after the test.

    Flushing first too keeps data from tests that use redis_url directly out of this one.
    """
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory, stack_secrets) -> str:
    """URL (with the password) of one node of a session-wide three-primary Redis Cluster."""
    root = tmp_path_factory.mktemp("redis-cluster")
    ports = free_ports(6)
    password = stack_secrets.redis_password
    with ExitStack() as stack:
        for i, (port, bus) in enumerate(zip(ports[:3], ports[3:], strict=True)):
            node = services.redis(port, root / f"node{i}", cluster_port=bus, password=password)
            stack.enter_context(services.running(node, root / f"node{i}.log"))
        create_cluster(ports[:3], password=password)
        yield stack_secrets.with_(redis_port=ports[0]).redis_url.removesuffix("/0")


@pytest.fixture
def redis_cluster_client(redis_cluster_url) -> RedisCluster:
    """A RedisCluster client on empty primaries, flushed again after the test."""
    client = RedisCluster.from_url(redis_cluster_url)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    disconnect(client)
