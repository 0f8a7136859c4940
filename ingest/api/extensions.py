"""Resources shared by every request of an app: settings, counting config, Redis client."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app
from redis.cluster import RedisCluster

from tally.ingest.counting.config import CountingConfig
from tally.redis_connect import connect, disconnect
from tally.settings import Settings

EXTENSION = "tally"


@dataclass(frozen=True)
class Resources:
    """What views need; one per app, built once at startup."""

    settings: Settings
    config: CountingConfig
    client: redis.Redis | RedisCluster

    def close(self) -> None:
        """Release the Redis connections (tests build many apps in one process)."""
        disconnect(self.client)


def init_app(app: Flask, settings: Settings) -> Resources:
    """Attach settings, counting config and a Redis client to the app."""
    resources = Resources(settings, CountingConfig.from_settings(settings), connect(settings))
    app.extensions[EXTENSION] = resources
    return resources


def resources() -> Resources:
    """The current app's Resources."""
    return current_app.extensions[EXTENSION]
