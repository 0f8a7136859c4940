"""One frozen Settings value, built from TALLY_* environment variables and an optional TOML file.

Every process (stack runner, ingest, flusher, exporter, tests) reads its
configuration through `load_settings`, so a variable means the same thing
everywhere.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from tally.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "TALLY_"


@dataclass(frozen=True)
class Settings:
    """Everything configurable in Tally; see docs/configuration.md."""

    # Local stack runner: where data lives and which loopback ports it uses.
    data_dir: Path = PROJECT_ROOT / ".tally"
    redis_port: int = 6379
    postgres_port: int = 5432
    influx_port: int = 8086
    prometheus_port: int = 9090
    ingest_port: int = 8080
    exporter_port: int = 9841

    # Connections (derived from the ports above unless set).
    redis_url: str = ""
    redis_cluster: bool = False
    # The local stack's Redis refuses writes past this (noeviction); "0" = no limit.
    redis_maxmemory: str = "1gb"
    postgres_dsn: str = ""
    influx_url: str = ""
    influx_db: str = "tally"
    influx_token: str = ""
    influx_username: str = ""
    influx_password: str = ""
    reader_password: str = ""  # gives the read-only tally_reader role (Grafana's) a login

    # Counting core.
    shards: int = 16
    dedup_mode: str = "exact"  # "exact" or "bloom"
    dedup_window: int = 24 * 3600
    bloom_capacity: int = 1_000_000
    bloom_error_rate: float = 0.001
    accepted_lateness: int = 24 * 3600
    clock_skew: int = 300
    outage_budget: int = 2 * 24 * 3600
    hot_keys: str = ""  # "counter=key=shards" entries separated by newlines
    sinks: tuple[str, ...] = ("timescale", "influx")

    # Ingest API.
    write_tokens: tuple[str, ...] = ()
    read_tokens: tuple[str, ...] = ()
    max_batch_events: int = 10_000
    max_body_bytes: int = 5 * 1024 * 1024
    rate_limits: str = "api=100/60"  # "name=max/window_seconds" separated by commas
    ingest_host: str = "127.0.0.1"
    ingest_workers: int = 0  # 0: 2 * cores + 1, capped at 8
    ingest_header_timeout: float = 5.0  # seconds to send a request line and headers
    ingest_body_timeout: float = 15.0  # seconds to send a whole request body
    ingest_max_connections: int = 1000  # open connections per worker; more get a 503
    insecure_no_auth: bool = False  # serve without bearer tokens (logs a warning)
    series_history: bool = True  # merge TimescaleDB rows into /series (else Redis alone)
    leaderboard_capacity: int = 0  # default bound on leaderboard size (0: unbounded)

    # Flusher.
    flush_interval: float = 10.0
    flush_batch_size: int = 20_000
    flush_lease_seconds: float = 120.0  # a killed flusher's marks return after this
    flush_maintenance_interval: float = 600.0  # seconds between retention runs
    influx_top_n: int = 100
    influx_keys: tuple[str, ...] = ()
    sink_connect_timeout: float = 5.0  # seconds to reach PostgreSQL / InfluxDB
    sink_write_timeout: float = 30.0  # seconds one sink write may take before it fails

    # Exporter.
    exporter_top_n: int = 10
    exporter_host: str = "127.0.0.1"  # 0.0.0.0 in containers

    def __post_init__(self) -> None:
        derived = {
            "redis_url": f"redis://127.0.0.1:{self.redis_port}/0",
            "postgres_dsn": f"postgresql://tally@127.0.0.1:{self.postgres_port}/tally",
            "influx_url": f"http://127.0.0.1:{self.influx_port}",
        }
        for name, value in derived.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)
        if self.dedup_mode not in ("exact", "bloom"):
            raise ConfigError(
                f"TALLY_DEDUP_MODE must be 'exact' or 'bloom', not {self.dedup_mode!r}")
        _check_ranges(self)

    def with_(self, **changes) -> Settings:
        """Return a copy with some fields changed (tests and the runner use this)."""
        return replace(self, **changes)


POSITIVE = ("shards", "dedup_window", "bloom_capacity", "max_batch_events", "max_body_bytes",
            "flush_interval", "flush_batch_size", "flush_lease_seconds",
            "sink_connect_timeout", "sink_write_timeout",
            "flush_maintenance_interval", "ingest_header_timeout", "ingest_body_timeout",
            "ingest_max_connections")
NON_NEGATIVE = ("accepted_lateness", "clock_skew", "outage_budget", "ingest_workers",
                "leaderboard_capacity", "influx_top_n", "exporter_top_n")


def _check_ranges(settings: Settings) -> None:
    """Refuse numbers no process could work with, naming the variable."""
    def refuse(name: str, rule: str) -> None:
        value = getattr(settings, name)
        raise ConfigError(f"{PREFIX}{name.upper()} must be {rule}, not {value}")

    for name in POSITIVE:
        if getattr(settings, name) <= 0:
            refuse(name, "greater than 0" if name != "shards" else "at least 1")
    for name in NON_NEGATIVE:
        if getattr(settings, name) < 0:
            refuse(name, "0 or more")
    for name in (f.name for f in fields(settings) if f.name.endswith("_port")):
        if not 1 <= getattr(settings, name) <= 65535:
            refuse(name, "a port between 1 and 65535")
    if not 0 < settings.bloom_error_rate < 1:
        refuse("bloom_error_rate", "between 0 and 1 (exclusive)")
    if settings.sink_write_timeout >= settings.flush_lease_seconds:
        refuse("sink_write_timeout", "less than TALLY_FLUSH_LEASE_SECONDS "
               f"({settings.flush_lease_seconds}), or a hung write outlives its lease")
    if not MEMORY_SIZE.fullmatch(settings.redis_maxmemory):
        refuse("redis_maxmemory", "bytes with an optional unit (kb, mb, gb), e.g. 1gb or 0")


MEMORY_SIZE = re.compile(r"\d+([kmg]b?)?", re.IGNORECASE)  # what redis.conf accepts
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
            "0": False, "false": False, "no": False, "off": False}


def _convert(name: str, kind: type, raw: object) -> object:
    if not isinstance(raw, str):
        return tuple(raw) if kind is tuple else raw
    try:
        if kind is bool:
            if raw.strip().lower() not in BOOLEANS:
                raise ValueError(f"must be true or false, not {raw!r}")
            return BOOLEANS[raw.strip().lower()]
        if kind is tuple:
            # Newlines separate when present, so list items (keys) may hold commas.
            parts = raw.split("\n" if "\n" in raw else ",")
            return tuple(part.strip() for part in parts if part.strip())
        if kind is Path:
            return Path(raw)
        try:
            return kind(raw)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ValueError(f"must be {noun}, not {raw!r}") from None
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name.upper()} {exc}") from None


def _kinds() -> dict[str, type]:
    base = {"int": int, "float": float, "bool": bool, "str": str, "Path": Path}
    return {
        f.name: tuple if str(f.type).startswith("tuple") else base[str(f.type)]
        for f in fields(Settings)
    }


def load_settings(environ: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from TALLY_CONFIG (a TOML file), then TALLY_* variables, then overrides."""
    environ = os.environ if environ is None else environ
    kinds = _kinds()
    values: dict[str, object] = {}
    config_file = environ.get(f"{PREFIX}CONFIG")
    if config_file:
        try:
            table = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from None
        values.update(table.get("tally", table))
    for name in kinds:
        raw = environ.get(PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    values.update(overrides)
    unknown = set(values) - set(kinds)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return Settings(**{k: _convert(k, kinds[k], v) for k, v in values.items()})


__all__ = ["Settings", "load_settings", "PROJECT_ROOT"]
