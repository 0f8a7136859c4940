"""The listener's own counters and the collector serving them on its /metrics.

Plain dicts of integers, updated under the listener's lock (a
prometheus_client Counter per sample would cost a lock and a label lookup
per line), turned into metric families on each scrape:

    tally_statsd_udp_packets_total 1042
    tally_statsd_samples_total{type="c"} 1830
    tally_statsd_refused_total{type="ms"} 12
    tally_statsd_malformed_total{reason="bad_rate"} 1
    tally_statsd_samples_dropped_total{reason="pending_full"} 0
    tally_statsd_events_applied_total 310
    tally_statsd_pending_events 0
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "tally_statsd_"


@dataclass
class Stats:
    """Everything the listener counts; one instance per listener."""

    udp_packets: int = 0
    tcp_connections: int = 0
    tcp_connections_refused: int = 0
    samples: Counter = field(default_factory=Counter)  # by type: c, s
    refused: Counter = field(default_factory=Counter)  # by type: g, ms, h, d
    malformed: Counter = field(default_factory=Counter)  # by reason
    samples_dropped: Counter = field(default_factory=Counter)  # pending_full, mapping
    events_applied: int = 0
    events_duplicate: int = 0
    events_dropped: Counter = field(default_factory=Counter)  # refused, outcome_unknown, …
    apply_failures: Counter = field(default_factory=Counter)  # by error class
    remainders_dropped: int = 0
    pending_events: int = 0


def _labelled(name: str, doc: str, label: str, values: Counter) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family


class StatsCollector:
    """Yields the families of a Stats value fresh on every scrape."""

    def __init__(self, stats: Stats):
        self.stats = stats

    def collect(self):
        """The listener's metric families."""
        s = self.stats
        yield CounterMetricFamily(PREFIX + "udp_packets", "UDP datagrams received",
                                  value=s.udp_packets)
        yield CounterMetricFamily(PREFIX + "tcp_connections", "TCP connections accepted",
                                  value=s.tcp_connections)
        yield CounterMetricFamily(PREFIX + "tcp_connections_refused",
                                  "TCP connections closed at once: too many open",
                                  value=s.tcp_connections_refused)
        yield _labelled("samples", "samples counted (c: counters, s: sets)", "type", s.samples)
        yield _labelled("refused", "samples of types Tally does not count (g, ms, h, d)",
                        "type", s.refused)
        yield _labelled("malformed", "lines that could not be read, by reason", "reason",
                        s.malformed)
        yield _labelled("samples_dropped", "readable samples not counted: pending_full "
                        "(memory bound reached), mapping (a drop rule)", "reason",
                        s.samples_dropped)
        yield CounterMetricFamily(PREFIX + "events_applied", "aggregated events counted",
                                  value=s.events_applied)
        yield CounterMetricFamily(PREFIX + "events_duplicate",
                                  "aggregated events found already counted (retries)",
                                  value=s.events_duplicate)
        yield _labelled("events_dropped", "aggregated events given up: refused (the batch "
                        "step refused them for good), outcome_unknown or partially_applied "
                        "(not retried: without event ids a retry could count twice)",
                        "reason", s.events_dropped)
        yield _labelled("apply_failures", "batch steps that failed and will be retried",
                        "error", s.apply_failures)
        yield CounterMetricFamily(PREFIX + "remainders_dropped",
                                  "fractional remainders not carried (memory bound)",
                                  value=s.remainders_dropped)
        yield GaugeMetricFamily(PREFIX + "pending_events",
                                "aggregated events waiting for the batch step",
                                value=s.pending_events)
