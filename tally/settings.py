"""One frozen Settings value, built from TALLY_* environment variables and an optional TOML file.

Every process (stack runner, ingest, flusher, exporter, tests) reads its
configuration through `load_settings`, so a variable means the same thing
everywhere. Nothing configurable is read anywhere else, and nothing is
silently ignored: an unknown key in the file or an unknown TALLY_* variable
stops startup, naming it.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import quote

from tally.errors import ConfigError
from tally.settings_rules import PREFIX, SINK_NAMES, check_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_VARIABLE = f"{PREFIX}CONFIG"  # names the TOML file; not a setting itself
# TALLY_* variables that are not settings and that no Tally process reads: the compose
# secrets (.env.example, docker-compose.yml) and the test suite's switch (docs/stack.md).
NON_SETTINGS = ("TALLY_POSTGRES_PASSWORD", "TALLY_GRAFANA_DB_PASSWORD",
                "TALLY_GRAFANA_INFLUX_PASSWORD", "TALLY_GRAFANA_ADMIN_PASSWORD",
                "TALLY_TEST_SERVICES")


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
    sinks: tuple[str, ...] = SINK_NAMES
    # The raw event log: accepted events kept in a Redis Stream per shard until the
    # flusher's archiver has them in TimescaleDB's `events` table.
    event_log: bool = True
    event_log_max: int = 250_000  # unarchived events per log stream before ingest answers 503
    events_retention: int = 35  # days the `events` table keeps

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
    # Public browser counters: tokenless writes from web pages (docs/api.md, "From a web page").
    public_counters: tuple[str, ...] = ()  # counters that accept them
    public_origins: tuple[str, ...] = ()  # Origin values allowed to send them ("*": any)
    public_rate_limit: str = "60/60"  # per client address: "max/window_seconds"
    trusted_proxy_header: str = ""  # e.g. X-Forwarded-For: the client address comes from it

    # Flusher.
    flush_interval: float = 10.0
    flush_batch_size: int = 20_000
    flush_lease_seconds: float = 120.0  # in-flight marks' deadline (the lock passes sooner)
    flush_maintenance_interval: float = 600.0  # seconds between retention runs
    influx_top_n: int = 100
    influx_keys: tuple[str, ...] = ()
    sink_connect_timeout: float = 5.0  # seconds to reach PostgreSQL / InfluxDB
    sink_write_timeout: float = 30.0  # seconds one sink write may take before it fails

    # Test and diagnostic hooks: the flusher sleeps flush_pause_seconds at these points.
    flush_pause_at: tuple[str, ...] = ()
    flush_pause_seconds: float = 1.0

    # Exporter.
    exporter_top_n: int = 10
    exporter_host: str = "127.0.0.1"  # 0.0.0.0 in containers

    # StatsD listener (`tally statsd`, docs/statsd.md).
    statsd_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    statsd_port: int = 8125  # UDP and TCP
    statsd_metrics_port: int = 9842  # its own /metrics
    statsd_mapping_file: str = ""  # TOML glob rules; empty: the default mapping for every name
    statsd_interval: float = 1.0  # seconds samples are summed before one batch step
    statsd_max_pending: int = 100_000  # aggregated events held in memory, unapplied ones too
    statsd_event_ids: bool = True  # an id per aggregated event: retries count once

    # Range reads from the event log (/uniques, /breakdown; docs/api.md, "Range reads").
    range_read_timeout: float = 10.0  # seconds one range read may take (statement_timeout)

    # Flusher takeover (docs/flusher.md, "Takeover and fencing").
    flush_lock_seconds: float = 6.0  # a sink lock's lease, renewed by its holder's heartbeat
    # Alert delivery: the local stack's Alertmanager (docs/observability.md, "Alert delivery").
    alertmanager_port: int = 9093
    alert_webhook_url: str = ""  # where notifications are posted; empty: the exporter logs them
    alert_group_wait: int = 30  # seconds a new group waits for more alerts before its first post
    alert_group_interval: int = 300  # seconds between posts about a group that changed
    alert_repeat_interval: int = 14400  # seconds before a still-firing group is posted again
    # Credentials (docs/security.md). `tally up` generates them once into
    # <data_dir>/tokens.env; the derived URLs above carry them.
    redis_password: str = ""  # Redis requirepass
    postgres_app_password: str = ""  # tally_app: what ingest, flusher and exporter log in as
    postgres_owner_password: str = ""  # tally_owner: owns the schema, runs migrations
    postgres_owner_dsn: str = ""  # migrations; from the port, else TALLY_POSTGRES_DSN if set
    postgres_superuser_password: str = ""  # local stack only: creates the roles and database

    # Local stack supervisor (`tally up`, docs/stack.md): restarts crashed processes.
    supervisor_port: int = 9843  # its /metrics: restarts and up state per stack process

    def __post_init__(self) -> None:
        derived = {name: value for name, value in self._derivations().items()
                   if not getattr(self, name)}
        if "postgres_dsn" not in derived and "postgres_owner_dsn" in derived:
            # A DSN set by hand (compose, a managed server) migrates through itself.
            derived["postgres_owner_dsn"] = self.postgres_dsn
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        # Not a field: which URLs came from the ports, so with_() can derive them again.
        object.__setattr__(self, "_derived", frozenset(derived))
        check_values(self)

    def _derivations(self) -> dict[str, str]:
        """The connection URLs a local stack on these ports has (used when a URL is unset)."""
        pg = f"127.0.0.1:{self.postgres_port}/tally"
        return {
            "redis_url": f"redis://{_login('', self.redis_password)}127.0.0.1:{self.redis_port}/0",
            "postgres_dsn": f"postgresql://{_login('tally_app', self.postgres_app_password)}{pg}",
            "postgres_owner_dsn": "postgresql://"
                                  f"{_login('tally_owner', self.postgres_owner_password)}{pg}",
            "influx_url": f"http://127.0.0.1:{self.influx_port}",
        }

    def with_(self, **changes) -> Settings:
        """A copy with some fields changed (tests and the runner use this).

        URLs derived from ports are derived again from the new ports; URLs
        that were set stay as set, and setting one to "" derives it.
        """
        rederive = {name: "" for name in self._derived if name not in changes}
        return replace(self, **rederive, **changes)


def _login(user: str, password: str) -> str:
    """The user:password@ part of a URL, quoted; just user@ (or nothing) without a password."""
    if not password:
        return f"{user}@" if user else ""
    return f"{quote(user, safe='')}:{quote(password, safe='')}@"


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


def _read_file(config_file: str, kinds: Mapping[str, type]) -> dict[str, object]:
    """The settings in a TOML file: at its top level, or all of them in one [tally] table."""
    try:
        table = tomllib.loads(Path(config_file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {config_file}: {exc}") from None
    if isinstance(table.get("tally"), dict):
        beside = sorted(set(table) - {"tally"})
        if beside:
            raise ConfigError(f"{config_file}: unknown key(s) beside the [tally] table: "
                              f"{', '.join(beside)} (with a [tally] table every setting "
                              "goes inside it)")
        table, where = table["tally"], "[tally]"
    else:
        where = "top level"
    unknown = sorted(set(table) - set(kinds))
    if unknown:
        raise ConfigError(f"{config_file}: unknown key(s) at {where}: {', '.join(unknown)}")
    return table


def _check_variables(environ: Mapping[str, str], kinds: Mapping[str, type]) -> None:
    """Refuse a TALLY_* variable that nothing reads (a typo would be silently ignored)."""
    settings = [PREFIX + name.upper() for name in kinds]
    known = {*settings, CONFIG_VARIABLE, *NON_SETTINGS}
    problems = []
    for variable in sorted(name for name in environ
                           if name.startswith(PREFIX) and name not in known):
        closest = difflib.get_close_matches(variable, settings, n=1)
        problems.append(f"{variable} is not a setting; did you mean {closest[0]}?" if closest
                        else f"{variable} is not a setting (docs/configuration.md)")
    if problems:
        raise ConfigError("; ".join(problems))


def load_settings(environ: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from TALLY_CONFIG (a TOML file), then TALLY_* variables, then overrides."""
    environ = os.environ if environ is None else environ
    kinds = _kinds()
    _check_variables(environ, kinds)
    values: dict[str, object] = {}
    config_file = environ.get(CONFIG_VARIABLE)
    if config_file:
        values.update(_read_file(config_file, kinds))
    for name in kinds:
        raw = environ.get(PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    values.update(overrides)
    unknown = set(values) - set(kinds)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return Settings(**{k: _convert(k, kinds[k], v) for k, v in values.items()})


__all__ = ["Settings", "load_settings", "PROJECT_ROOT", "SINK_NAMES", "NON_SETTINGS"]
