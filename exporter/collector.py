"""The Prometheus collector: reads Redis on every scrape and yields fresh metric families.

A scrape emits, for example::

    tally_up 1.0
    tally_events_total{counter="views"} 1234.0
    tally_event_value_total{counter="views"} 1301.0
    tally_duplicates_total{counter="views"} 17.0
    tally_unique_users{counter="views",window="hour"} 311.0
    tally_top_key_events{counter="views",key="video:42",window="day"} 96.0
    tally_leaderboard_members{board="season1"} 5000.0
    tally_flusher_lag_seconds{sink="timescale"} 4.2
    tally_flusher_last_success_timestamp_seconds{sink="timescale"} 1.7623e+09
    tally_flusher_rows_total{sink="timescale"} 88120.0
    tally_dirty_buckets{sink="influx"} 310.0
    tally_event_log_backlog_events{counter="views"} 5120.0
    tally_event_log_backlog_entries{counter="views"} 40.0
    tally_event_log_fullest_stream_events{counter="views"} 610.0
    tally_event_log_oldest_age_seconds{counter="views"} 3.1
    tally_event_log_max_events 1e+06
    tally_redis_memory_used_bytes 7.4e+07
    tally_redis_memory_max_bytes 1.073741824e+09
    tally_redis_memory_used_ratio 0.069
    tally_scrape_duration_seconds 0.012

When Redis cannot be read, the scrape reports `tally_up 0` and no other
Redis-derived numbers, so dashboards show a gap rather than stale values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tally.exporter.snapshot import Snapshot, read_snapshot
from tally.ingest.counting.config import CountingConfig

log = logging.getLogger(__name__)


def _family(kind, name: str, doc: str, labels: list[str], rows) -> Metric:
    family = kind(name, doc, labels=labels)
    for *values, number in rows:
        family.add_metric(list(values), number)
    return family


def counter_families(snap: Snapshot) -> Iterator[Metric]:
    """Per-counter totals, unique users and today's top keys."""
    c = snap.counters
    yield _family(CounterMetricFamily, "tally_events", "Events counted (duplicates excluded).",
                  ["counter"], [(s.counter, s.events) for s in c])
    yield _family(CounterMetricFamily, "tally_event_value", "Sum of counted events' values.",
                  ["counter"], [(s.counter, s.value) for s in c])
    yield _family(CounterMetricFamily, "tally_duplicates", "Events dropped as duplicates.",
                  ["counter"], [(s.counter, s.duplicates) for s in c])
    yield _family(GaugeMetricFamily, "tally_unique_users",
                  "Approximate distinct users in the current UTC hour/day (HyperLogLog).",
                  ["counter", "window"],
                  [(s.counter, w, n) for s in c for w, n in s.unique_users.items()])
    yield _family(GaugeMetricFamily, "tally_top_key_events",
                  "Count of today's top keys of each counter (top N only).",
                  ["counter", "key", "window"],
                  [(s.counter, key, "day", n) for s in c for key, n in s.top])


def flusher_families(snap: Snapshot) -> Iterator[Metric]:
    """Lag per sink (from Redis itself), flusher health per sink, and dirty marks waiting.

    With the event log on, the archiver is one more sink, "events": its health
    hash is written like a sink's, and its lag is the oldest unarchived entry's age.
    """
    f = snap.flushers
    yield _family(GaugeMetricFamily, "tally_flusher_lag_seconds",
                  "Age of the oldest mark not yet stored in the sink (dirty or in flight).",
                  ["sink"], sorted(snap.lag.items()))
    yield _family(GaugeMetricFamily, "tally_flusher_last_duration_seconds",
                  "Duration of the last flush run.", ["sink"],
                  [(h.sink, h.last_duration_seconds) for h in f])
    yield _family(GaugeMetricFamily, "tally_flusher_last_run_timestamp_seconds",
                  "When the last flush run ended (epoch).", ["sink"],
                  [(h.sink, h.last_run) for h in f])
    yield _family(GaugeMetricFamily, "tally_flusher_last_success_timestamp_seconds",
                  "When the last successful flush run ended (epoch).", ["sink"],
                  [(h.sink, h.last_success) for h in f if h.last_success is not None])
    yield _family(CounterMetricFamily, "tally_flusher_rows", "Rows written to the sink.",
                  ["sink"], [(h.sink, h.rows_total) for h in f])
    yield _family(CounterMetricFamily, "tally_flusher_errors", "Failed flush attempts.",
                  ["sink"], [(h.sink, h.errors_total) for h in f])
    yield _family(CounterMetricFamily, "tally_flusher_skipped_points",
                  "Per-key points the sink cannot store (keys InfluxDB 1.x cannot tag).",
                  ["sink"], [(h.sink, h.skipped_total) for h in f])
    yield _family(GaugeMetricFamily, "tally_dirty_buckets",
                  "Minute buckets marked dirty and not yet taken by a flusher.", ["sink"],
                  sorted(snap.dirty.items()))


def event_log_families(snap: Snapshot) -> Iterator[Metric]:
    """What the archiver still owes TimescaleDB per counter, and the per-stream bound.

    Gauges, not counters: the batch step raises them and the archiver's trim lowers them.
    """
    log = snap.event_log
    if log is None:
        return
    c = log.counters
    yield _family(GaugeMetricFamily, "tally_event_log_backlog_events",
                  "Events in the counter's log streams not yet archived to TimescaleDB.",
                  ["counter"], [(s.counter, s.backlog_events) for s in c])
    yield _family(GaugeMetricFamily, "tally_event_log_backlog_entries",
                  "Entries (one per batch and shard) in the counter's log streams.",
                  ["counter"], [(s.counter, s.backlog_entries) for s in c])
    yield _family(GaugeMetricFamily, "tally_event_log_fullest_stream_events",
                  "Unarchived events of the counter's fullest log stream (one shard); at "
                  "tally_event_log_max_events ingest refuses its batches (503 event-log-full).",
                  ["counter"], [(s.counter, s.fullest_stream_events) for s in c])
    yield _family(GaugeMetricFamily, "tally_event_log_oldest_age_seconds",
                  "Age of the counter's oldest unarchived log entry (0 when none).",
                  ["counter"], [(s.counter, s.oldest_age_seconds) for s in c])
    yield GaugeMetricFamily("tally_event_log_max_events",
                            "Unarchived events one log stream may hold (TALLY_EVENT_LOG_MAX).",
                            value=log.max_events)


def redis_families(snap: Snapshot) -> Iterator[Metric]:
    """Leaderboard sizes and Redis memory."""
    yield _family(GaugeMetricFamily, "tally_leaderboard_members", "Members of a leaderboard.",
                  ["board"], snap.boards)
    memory = snap.memory
    yield GaugeMetricFamily("tally_redis_memory_used_bytes",
                            "Memory Redis uses (INFO used_memory, summed over primaries).",
                            value=memory.used_bytes)
    yield GaugeMetricFamily("tally_redis_memory_max_bytes",
                            "Redis maxmemory, summed over primaries (0: some primary has none).",
                            value=memory.max_bytes)
    if memory.used_ratio is not None:
        yield GaugeMetricFamily("tally_redis_memory_used_ratio",
                                "used_memory / maxmemory of the fullest primary; at 1 Redis "
                                "refuses writes (noeviction).", value=memory.used_ratio)
    yield GaugeMetricFamily("tally_redis_keys", "Keys in Redis (DBSIZE, dedup marks included).",
                            value=snap.keys)


class TallyCollector(Collector):
    """Collector for one Redis (or Redis Cluster) client; register it on a CollectorRegistry."""

    def __init__(self, client, config: CountingConfig, top_n: int = 10,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.config, self.top_n = client, config, top_n
        self.clock = clock
        self.errors = 0

    def _read(self) -> Snapshot | None:
        try:
            return read_snapshot(self.client, self.config, self.top_n, self.clock())
        except redis.RedisError as exc:
            self.errors += 1
            log.warning("scrape could not read Redis: %s", exc)
            return None

    def collect(self) -> Iterator[Metric]:
        """Read Redis now and yield every family (only tally_up 0 and timings on failure)."""
        started = time.perf_counter()
        snap = self._read()
        yield GaugeMetricFamily("tally_up", "1 if the last scrape could read Redis.",
                                value=0 if snap is None else 1)
        if snap is not None:
            yield from counter_families(snap)
            yield from flusher_families(snap)
            yield from event_log_families(snap)
            yield from redis_families(snap)
        yield CounterMetricFamily("tally_scrape_errors", "Scrapes that could not read Redis.",
                                  value=self.errors)
        yield GaugeMetricFamily("tally_scrape_duration_seconds",
                                "Time this scrape spent reading Redis.",
                                value=time.perf_counter() - started)
