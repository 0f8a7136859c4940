"""Settings come from TOML, then TALLY_* variables, and every one is documented."""

import dataclasses
import re

import pytest

from tally.errors import ConfigError
from tally.settings import NON_SETTINGS, PROJECT_ROOT, SINK_NAMES, Settings, load_settings


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


@pytest.mark.parametrize(("port", "url", "value"), [
    ("redis_port", "redis_url", "redis://127.0.0.1:7000/0"),
    ("postgres_port", "postgres_dsn", "postgresql://tally_app@127.0.0.1:7000/tally"),
    ("postgres_port", "postgres_owner_dsn", "postgresql://tally_owner@127.0.0.1:7000/tally"),
    ("influx_port", "influx_url", "http://127.0.0.1:7000"),
])
def test_with_recomputes_every_derived_url(port, url, value):
    assert getattr(Settings().with_(**{port: 7000}), url) == value
    assert getattr(load_settings({}).with_(**{port: 7000}), url) == value


def test_with_keeps_urls_that_were_set():
    settings = Settings(redis_url="redis://cache:6379/2")
    assert settings.with_(redis_port=7000).redis_url == "redis://cache:6379/2"
    assert settings.with_(redis_url="").redis_url == "redis://127.0.0.1:6379/0"
    changed = Settings().with_(redis_url="redis://cache:1/0").with_(redis_port=7000)
    assert changed.redis_url == "redis://cache:1/0"


@pytest.mark.parametrize(("text", "named"), [
    ("redis_port = 7000\n[tally]\nshards = 4\n", "redis_port"),  # beside a [tally] table
    ("[tally]\nshards = 4\n[redis]\nport = 1\n", "redis"),  # an unknown table
    ("[tally]\nredis_prot = 1\n", "redis_prot"),  # an unknown name inside [tally]
    ("shards = 4\n[tally]\n", "shards"),
    ("[stack]\nredis_port = 1\n", "stack"),  # a table without [tally]
])
def test_unknown_file_keys_anywhere_are_errors(tmp_path, text, named):
    config = tmp_path / "tally.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=rf"\b{named}\b"):
        load_settings({"TALLY_CONFIG": str(config)})


def test_file_keys_at_top_level_or_under_tally_both_work(tmp_path):
    config = tmp_path / "tally.toml"
    config.write_text("shards = 4\n")
    assert load_settings({"TALLY_CONFIG": str(config)}).shards == 4
    config.write_text("[tally]\nshards = 5\n")
    assert load_settings({"TALLY_CONFIG": str(config)}).shards == 5


def test_sink_names_are_the_flusher_sink_classes():
    from tally.ingest.flusher.sinks import SINK_CLASSES
    assert tuple(SINK_CLASSES) == SINK_NAMES == Settings().sinks
    assert all(cls.name == name for name, cls in SINK_CLASSES.items())


@pytest.mark.parametrize(("sinks", "message"), [
    ("nosuch", "TALLY_SINKS names unknown sink 'nosuch' (known: timescale, influx)"),
    ("timescale,influx,influxdb", "unknown sink 'influxdb'"),
    ("influx,influx", "TALLY_SINKS names sink 'influx' twice"),
])
def test_unknown_or_repeated_sinks_are_refused(sinks, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({"TALLY_SINKS": sinks})
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings(sinks=tuple(sinks.split(",")))


def test_no_sinks_is_allowed():
    assert load_settings({"TALLY_SINKS": ""}).sinks == ()


@pytest.mark.parametrize(("variable", "message"), [
    ("TALLY_REDIS_ULR", "TALLY_REDIS_ULR is not a setting; did you mean TALLY_REDIS_URL?"),
    ("TALLY_SHARD", "did you mean TALLY_SHARDS?"),
    ("TALLY_ZZZZZZZZZZZZ", "TALLY_ZZZZZZZZZZZZ is not a setting (docs/configuration.md)"),
])
def test_unknown_environment_variable_stops_with_the_closest_name(variable, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({variable: "1"})


def test_documented_non_settings_are_accepted():
    assert load_settings({name: "x" for name in NON_SETTINGS}) == Settings()


def test_non_settings_are_documented_and_every_tally_variable_is_known():
    """Every TALLY_* name the compose file, .env.example and tests use is a setting or a
    documented non-setting, so a real deployment never trips the unknown-variable check."""
    docs = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    section = docs.split("## Variables that are not settings", 1)[1]
    assert set(NON_SETTINGS) <= set(re.findall(r"`(TALLY_[A-Z_]+)`", section))
    known = set(NON_SETTINGS) | {f"TALLY_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    deliberate = {"test_settings.py", "test_startup_checks.py"}  # spell unknown names
    tests = sorted(p for p in (PROJECT_ROOT / "tests").glob("*.py") if p.name not in deliberate)
    sources = [PROJECT_ROOT / "docker-compose.yml", PROJECT_ROOT / ".env.example", *tests]
    used = {name for path in sources
            for name in re.findall(r"\b(TALLY_[A-Z_]*[A-Z])\b(?=\s*[=:\"'})])", path.read_text())}
    assert used - known - {"TALLY_CONFIG"} == set()


def test_flush_pause_is_read_through_settings():
    settings = load_settings({"TALLY_FLUSH_PAUSE_AT": "taken:influx, read:influx",
                              "TALLY_FLUSH_PAUSE_SECONDS": "0.25"})
    assert (settings.flush_pause_at, settings.flush_pause_seconds) == \
        (("taken:influx", "read:influx"), 0.25)
