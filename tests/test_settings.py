"""Settings come from TOML, then TALLY_* variables, and every one is documented."""

import dataclasses
import re

import pytest

from tally.errors import ConfigError
from tally.settings import PROJECT_ROOT, Settings, load_settings


def test_every_setting_is_documented():
    text = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`TALLY_([A-Z_]+)`", text))
    assert {f.name.upper() for f in dataclasses.fields(Settings)} <= documented


def test_environment_overrides_file_and_derives_urls(tmp_path):
    config = tmp_path / "tally.toml"
    config.write_text('[tally]\nredis_port = 7000\nshards = 4\n')
    settings = load_settings({"TALLY_CONFIG": str(config), "TALLY_SHARDS": "8"})
    assert (settings.redis_url, settings.shards) == ("redis://127.0.0.1:7000/0", 8)


def test_lists_split_on_newlines_when_items_hold_commas():
    assert load_settings({"TALLY_INFLUX_KEYS": "a,b\nc"}).influx_keys == ("a,b", "c")
    assert load_settings({"TALLY_WRITE_TOKENS": "x, y"}).write_tokens == ("x", "y")


@pytest.mark.parametrize(("environ", "message"), [
    ({"TALLY_SHARDS": "many"}, "TALLY_SHARDS must be an integer, not 'many'"),
    ({"TALLY_FLUSH_INTERVAL": "soon"}, "TALLY_FLUSH_INTERVAL must be a number, not 'soon'"),
    ({"TALLY_REDIS_CLUSTER": "maybe"}, "TALLY_REDIS_CLUSTER must be true or false, not 'maybe'"),
    ({"TALLY_DEDUP_MODE": "fuzzy"}, "TALLY_DEDUP_MODE must be 'exact' or 'bloom'"),
    ({"TALLY_SHARDS": "0"}, "TALLY_SHARDS must be at least 1, not 0"),
    ({"TALLY_FLUSH_INTERVAL": "-1"}, "TALLY_FLUSH_INTERVAL must be greater than 0, not -1.0"),
    ({"TALLY_CLOCK_SKEW": "-5"}, "TALLY_CLOCK_SKEW must be 0 or more, not -5"),
    ({"TALLY_INGEST_PORT": "70000"}, "TALLY_INGEST_PORT must be a port between 1 and 65535"),
    ({"TALLY_BLOOM_ERROR_RATE": "1"}, "TALLY_BLOOM_ERROR_RATE must be between 0 and 1"),
])
def test_bad_values_name_the_setting(environ, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ)


def test_unknown_file_setting_is_an_error(tmp_path):
    config = tmp_path / "tally.toml"
    config.write_text("redis_prot = 1\n")
    with pytest.raises(ConfigError, match="redis_prot"):
        load_settings({"TALLY_CONFIG": str(config)})
