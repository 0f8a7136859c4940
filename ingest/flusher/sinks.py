"""Sinks by name: the one place that knows which classes implement the sink names.

The names themselves are a base-layer fact (tally.settings_rules.SINK_NAMES),
so Settings can refuse an unknown sink in every process, not only here;
importing this module fails if the classes and the names ever disagree.
"""

from __future__ import annotations

from tally.errors import ConfigError
from tally.ingest.flusher.influx import InfluxSink
from tally.ingest.flusher.sink import Sink
from tally.ingest.flusher.timescale import TimescaleSink
from tally.settings_rules import SINK_NAMES

SINK_CLASSES = {cls.name: cls for cls in (TimescaleSink, InfluxSink)}
if tuple(SINK_CLASSES) != SINK_NAMES:
    raise ImportError(f"sink classes {tuple(SINK_CLASSES)} do not match SINK_NAMES {SINK_NAMES}")


def build_sink(name: str, settings) -> Sink:
    """The sink called `name`, configured from Settings."""
    if name not in SINK_CLASSES:
        raise ConfigError(f"unknown sink {name!r} in TALLY_SINKS (known: {', '.join(SINK_NAMES)})")
    return SINK_CLASSES[name].from_settings(settings)
