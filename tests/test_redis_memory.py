"""Redis memory is bounded: the stack's Redis refuses writes at maxmemory and never evicts."""

from __future__ import annotations

import pytest
import redis
import yaml

from tally.errors import ConfigError
from tally.settings import PROJECT_ROOT, Settings, load_settings
from tally.stack import services
from tally.stack.process import free_ports
from tally.stack.runner import STACK

COMPOSE_REDIS = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())[
    "services"]["redis"]


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_stack_redis_refuses_writes_at_maxmemory_and_keeps_every_key(tmp_path):
    """`tally up`'s Redis with a 4 MB limit: writes fail with OOM, nothing written is evicted."""
    settings = Settings(data_dir=tmp_path, redis_port=free_ports(1)[0], redis_maxmemory="4mb")
    service = next(entry for entry in STACK if entry.name == "redis").build(settings)
    with services.running(service, tmp_path / "redis.log"):
        client = redis.Redis.from_url(service.url)
        config = client.config_get("maxmemory*")
        assert (config["maxmemory"], config["maxmemory-policy"]) == (str(4 << 20), "noeviction")
        written = 0
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for written in range(20_000):  # 20 MB at most: far past the limit
                client.set(f"k{written}", b"x" * 1024)
        assert written > 1000  # it did fill up before refusing
        assert client.dbsize() == written  # every write before the refusal is still there
        assert client.get("k0") == b"x" * 1024
        client.close()


def test_compose_redis_has_the_default_limit_and_never_evicts():
    argv = COMPOSE_REDIS["command"]
    assert _flag(argv, "--maxmemory") == Settings().redis_maxmemory
    assert _flag(argv, "--maxmemory-policy") == "noeviction"


@pytest.mark.parametrize("value", ["0", "1gb", "512MB", "100000", "64k"])
def test_maxmemory_setting_takes_redis_sizes(value):
    assert load_settings({"TALLY_REDIS_MAXMEMORY": value}).redis_maxmemory == value


@pytest.mark.parametrize("value", ["", "lots", "1.5gb", "-1", "1tb"])
def test_maxmemory_setting_refuses_what_redis_would(value):
    with pytest.raises(ConfigError, match="TALLY_REDIS_MAXMEMORY must be bytes"):
        load_settings({"TALLY_REDIS_MAXMEMORY": value})


def test_sink_write_timeout_must_end_before_the_lease():
    with pytest.raises(ConfigError, match="TALLY_SINK_WRITE_TIMEOUT must be less than"):
        load_settings({"TALLY_FLUSH_LEASE_SECONDS": "20", "TALLY_SINK_WRITE_TIMEOUT": "20"})
