"""What a Settings value must hold, checked when it is built, each refusal naming the variable.

Separate from tally.settings so the list of fields and their defaults stays
readable; nothing here knows where a value came from (file, variable, code).
"""

from __future__ import annotations

import re
from dataclasses import fields

from tally.errors import ConfigError

PREFIX = "TALLY_"
# The sinks the batch step can mark dirty and the flusher can drain; the flusher's
# SINK_CLASSES (tally.ingest.flusher.sinks) implements exactly these.
SINK_NAMES = ("timescale", "influx")
DEDUP_MODES = ("exact", "bloom")
MEMORY_SIZE = re.compile(r"\d+([kmg]b?)?", re.IGNORECASE)  # what redis.conf accepts
WEBHOOK_URL = re.compile(r"https?://[^\s/?#]+\S*")  # Alertmanager posts to it


def check_values(settings) -> None:
    """Refuse a Settings value some process could not work with."""
    if settings.dedup_mode not in DEDUP_MODES:
        raise ConfigError(
            f"{PREFIX}DEDUP_MODE must be 'exact' or 'bloom', not {settings.dedup_mode!r}")
    check_sinks(settings.sinks)
    check_ranges(settings)
    check_secrets(settings)


def check_sinks(sinks: tuple[str, ...]) -> None:
    """Refuse a sink no flusher drains: its dirty set would grow forever."""
    known = ", ".join(SINK_NAMES)
    for index, name in enumerate(sinks):
        if name not in SINK_NAMES:
            raise ConfigError(f"{PREFIX}SINKS names unknown sink {name!r} (known: {known})")
        if name in sinks[:index]:
            raise ConfigError(f"{PREFIX}SINKS names sink {name!r} twice")


POSITIVE = ("shards", "dedup_window", "bloom_capacity", "max_batch_events", "max_body_bytes",
            "flush_interval", "flush_batch_size", "flush_lease_seconds",
            "sink_connect_timeout", "sink_write_timeout",
            "flush_maintenance_interval", "ingest_header_timeout", "ingest_body_timeout",
            "ingest_max_connections", "event_log_max", "events_retention",
            "statsd_interval", "statsd_max_pending", "range_read_timeout",
            "alert_group_wait", "alert_group_interval", "alert_repeat_interval")
NON_NEGATIVE = ("accepted_lateness", "clock_skew", "outage_budget", "ingest_workers",
                "leaderboard_capacity", "influx_top_n", "exporter_top_n", "flush_pause_seconds")


def check_ranges(settings) -> None:
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
    if settings.flush_lock_seconds < 0.5:  # renewed every third of it, with Redis round trips
        refuse("flush_lock_seconds", "at least 0.5")
    if not MEMORY_SIZE.fullmatch(settings.redis_maxmemory):
        refuse("redis_maxmemory", "bytes with an optional unit (kb, mb, gb), e.g. 1gb or 0")
    if settings.alert_webhook_url and not WEBHOOK_URL.fullmatch(settings.alert_webhook_url):
        refuse("alert_webhook_url", "an http:// or https:// URL, or empty for the exporter's log")




# Passwords that config files and tokens.env carry as is: Redis' auth.conf quotes them,
# tokens.env holds one VARIABLE=value per line, InfluxQL quotes them in single quotes.
SECRETS = ("redis_password", "postgres_app_password", "postgres_owner_password",
           "postgres_superuser_password", "reader_password", "influx_password")
UNSAFE_IN_SECRETS = re.compile(r"[\s\"'\\]")


def check_secrets(settings) -> None:
    """Refuse a password that could not be written safely where the local stack puts it."""
    for name in SECRETS:
        if UNSAFE_IN_SECRETS.search(getattr(settings, name)):
            raise ConfigError(f"{PREFIX}{name.upper()} must not contain whitespace, quotes "
                              "or backslashes")
