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
    ({"TALLY_SHARDS": "many"}, "TALLY_SHARDS"),
    ({"TALLY_DEDUP_MODE": "fuzzy"}, "TALLY_DEDUP_MODE"),
    ({"TALLY_SHARDS": "0"}, "at least 1"),
])
def test_bad_values_name_the_setting(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ)


def test_unknown_file_setting_is_an_error(tmp_path):
    config = tmp_path / "tally.toml"
    config.write_text("redis_prot = 1\n")
    with pytest.raises(ConfigError, match="redis_prot"):
        load_settings({"TALLY_CONFIG": str(config)})
