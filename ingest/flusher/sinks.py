"""Sinks by name: the one place that knows which classes implement the sink names."""

from __future__ import annotations

from tally.ingest.flusher.influx import InfluxSink
from tally.ingest.flusher.sink import Sink
from tally.ingest.flusher.timescale import TimescaleSink

from tally.errors import ConfigError

SINK_CLASSES = {"timescale": TimescaleSink, "influx": InfluxSink}


def build_sink(name: str, settings) -> Sink:
    """The sink called `name`, configured from Settings."""
    if name not in SINK_CLASSES:
        raise ConfigError(f"unknown sink {name!r} in TALLY_SINKS (known: timescale, influx)")
    return SINK_CLASSES[name].from_settings(settings)
