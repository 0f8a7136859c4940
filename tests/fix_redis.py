"""Redis fixtures: one server and one three-primary cluster per session, flushed after each test."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import redis
from redis.cluster import RedisCluster

from tally.redis_connect import disconnect
from tally.stack import services
from tally.stack.cluster import create_cluster
from tally.stack.process import free_ports


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """URL of a session-wide redis-server (appendonly yes) on a free loopback port."""
    root = tmp_path_factory.mktemp("redis")
    with services.running(services.redis(free_ports(1)[0], root / "data"), root / "log") as svc:
        yield svc.url


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
def redis_cluster_url(tmp_path_factory) -> str:
    """URL of one node of a session-wide Redis Cluster of three primaries, cluster_state:ok."""
    root = tmp_path_factory.mktemp("redis-cluster")
    ports = free_ports(6)
    with ExitStack() as stack:
        for i, (port, bus) in enumerate(zip(ports[:3], ports[3:], strict=True)):
            node = services.redis(port, root / f"node{i}", cluster_port=bus)
            stack.enter_context(services.running(node, root / f"node{i}.log"))
        create_cluster(ports[:3])
        yield f"redis://127.0.0.1:{ports[0]}"


@pytest.fixture
def redis_cluster_client(redis_cluster_url) -> RedisCluster:
    """A RedisCluster client on empty primaries, flushed again after the test."""
    client = RedisCluster.from_url(redis_cluster_url)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    disconnect(client)
