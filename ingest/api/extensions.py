"""Resources shared by every request of an app: settings, counting config, Redis client."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app
from redis.cluster import RedisCluster

from ingest.counting.config import CountingConfig
from tally.settings import Settings

EXTENSION = "tally"


def connect(settings: Settings) -> redis.Redis | RedisCluster:
    """A bytes-returning client for settings.redis_url (a cluster client if so configured)."""
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, socket_timeout=5)
    return redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                socket_connect_timeout=2, health_check_interval=30)


@dataclass(frozen=True)
class Resources:
    """What views need; one per app, built once at startup."""

    settings: Settings
    config: CountingConfig
    client: redis.Redis | RedisCluster

    def close(self) -> None:
        """Release the Redis connections (tests build many apps in one process)."""
        self.client.close()


def init_app(app: Flask, settings: Settings) -> Resources:
    """Attach settings, counting config and a Redis client to the app."""
    resources = Resources(settings, CountingConfig.from_settings(settings), connect(settings))
    app.extensions[EXTENSION] = resources
    return resources


def resources() -> Resources:
    """The current app's Resources."""
    return current_app.extensions[EXTENSION]
