"""The exporter reports the event log's backlog and the archiver's health, after real batches
and real archiver runs (Redis, Redis Cluster, TimescaleDB)."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from tally import keys
from tally.errors import EventLogFullError
from tally.events import Event
from tally.exporter.collector import TallyCollector
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import archive
from tally.ingest.flusher.loop import SinkLoop
from tally.settings import PROJECT_ROOT
from tests.flusher_support import make_settings

SHARDS = 4
LOG_MAX = 500
LOG_SERIES = ("tally_event_log_backlog_events", "tally_event_log_backlog_entries",
              "tally_event_log_fullest_stream_events", "tally_event_log_oldest_age_seconds")
HEALTH_SERIES = ("tally_flusher_last_duration_seconds", "tally_flusher_last_run_timestamp_seconds",
                 "tally_flusher_last_success_timestamp_seconds", "tally_flusher_rows_total",
                 "tally_flusher_errors_total", "tally_flusher_skipped_points_total")


def registry_for(client, config: CountingConfig, at: float) -> CollectorRegistry:
    """A fresh registry with Tally's collector whose clock reads `at`."""
    registry = CollectorRegistry()
    registry.register(TallyCollector(client, config, top_n=0, clock=lambda: at))
    return registry


def scrape(client, config: CountingConfig, at: float) -> dict:
    """{(sample name, sorted labels): value} of one collect."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry_for(client, config, at).collect() for s in family.samples}


def per_counter(samples: dict, name: str) -> dict[str, float]:
    """{counter: value} of one per-counter family."""
    return {dict(labels)["counter"]: v for (n, labels), v in samples.items() if n == name}


def per_sink(samples: dict, name: str) -> dict[str, float]:
    """{sink: value} of one per-sink family."""
    return {dict(labels)["sink"]: v for (n, labels), v in samples.items() if n == name}


def views(ids: range, keys_: str = "abcde") -> list[Event]:
    """Views with distinct ids, keys taken in turn (so they spread over the shards)."""
    now = int(time.time())
    return [Event("views", keys_[i % len(keys_)], now, id=f"v{i}") for i in ids]


def likes(n: int) -> list[Event]:
    """Likes with distinct ids on three keys."""
    return [Event("likes", f"post:{i % 3}", int(time.time()), id=f"l{i}") for i in range(n)]


def shards_of(events: list[Event]) -> Counter:
    """Events per home shard (no hot keys are configured, so the home shard is the shard)."""
    return Counter(keys.key_shard(event.key, SHARDS) for event in events)


@pytest.fixture(params=[False, True], ids=["redis", "cluster"])
def client(request):
    """A real Redis or a real three-primary Redis Cluster, empty."""
    return request.getfixturevalue("redis_cluster_client" if request.param else "redis_client")


def test_backlog_equals_what_was_applied(client):
    """Backlog events and entries per counter, the fullest stream and the oldest entry's age,
    from real batches; retried events are duplicates and owe the archive nothing."""
    config = CountingConfig(shards=SHARDS, event_log_max=LOG_MAX)
    first, later = views(range(12)), views(range(12, 15))
    started = time.time()
    apply_batch(client, config, first)
    time.sleep(0.05)
    apply_batch(client, config, likes(5))
    apply_batch(client, config, first[:6] + later)  # six retries: duplicates
    ended = time.time()
    at = ended + 100
    samples = scrape(client, config, at)
    assert per_counter(samples, "tally_event_log_backlog_events") == {"views": 15, "likes": 5}
    assert per_counter(samples, "tally_event_log_backlog_entries") == {
        "views": len(shards_of(first)) + len(shards_of(later)), "likes": len(shards_of(likes(5)))}
    assert per_counter(samples, "tally_event_log_fullest_stream_events") == {
        "views": max((shards_of(first) + shards_of(later)).values()),
        "likes": max(shards_of(likes(5)).values())}
    assert samples[("tally_event_log_max_events", ())] == LOG_MAX
    ages = per_counter(samples, "tally_event_log_oldest_age_seconds")
    assert 100 <= ages["views"] <= at - int(started * 1000) / 1000 + 0.001
    assert ages["likes"] <= ages["views"] - 0.05  # likes' first entry came 50 ms later
    assert per_sink(samples, "tally_flusher_lag_seconds")["events"] == ages["views"]


def test_fullest_stream_reaches_the_bound_where_ingest_refuses(redis_client):
    """The bound is per stream: one shard's backlog reaches it while the counter's other shards
    hold nothing, and the next batch there is refused (what TallyEventLogNearlyFull warns of)."""
    config = CountingConfig(shards=SHARDS, event_log_max=10)
    apply_batch(redis_client, config, views(range(10), keys_="k"))
    with pytest.raises(EventLogFullError):
        apply_batch(redis_client, config, views(range(10, 11), keys_="k"))
    samples = scrape(redis_client, config, time.time())
    assert per_counter(samples, "tally_event_log_fullest_stream_events") == {"views": 10}
    assert per_counter(samples, "tally_event_log_backlog_entries") == {"views": 1}
    assert samples[("tally_event_log_max_events", ())] == 10


def _archiver_step(client, settings, config: CountingConfig) -> bool:
    """One run of the flusher's archiver worker, health written as `tally flush` writes it."""
    worker = SinkLoop(archive.EventArchiver.from_settings(settings), archive.archive_run)
    try:
        return worker.step(client, config, settings, lambda point: None)
    finally:
        worker.sink.close()


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_archiver_run_drains_backlog_and_reports_health(request, cluster, pg_dsn):
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = request.getfixturevalue("redis_cluster_client" if cluster else "redis_client")
    settings = make_settings(url, pg_dsn, "http://127.0.0.1:1", redis_cluster=cluster,
                             shards=SHARDS)
    config = CountingConfig.from_settings(settings)
    apply_batch(client, config, views(range(20)) + likes(4))
    before = scrape(client, config, time.time() + 30)
    assert per_sink(before, "tally_flusher_lag_seconds")["events"] >= 30
    assert not any(per_sink(before, name).get("events") for name in HEALTH_SERIES)

    ran = time.time()
    assert _archiver_step(client, settings, config)
    after = scrape(client, config, time.time())
    for name in LOG_SERIES:
        assert per_counter(after, name) == {"views": 0, "likes": 0}, name
    assert per_sink(after, "tally_flusher_lag_seconds")["events"] == 0
    assert per_sink(after, "tally_flusher_rows_total")["events"] == 24
    assert per_sink(after, "tally_flusher_errors_total")["events"] == 0
    assert per_sink(after, "tally_flusher_skipped_points_total")["events"] == 0
    assert per_sink(after, "tally_flusher_last_success_timestamp_seconds")["events"] >= int(ran)
    assert per_sink(after, "tally_flusher_last_run_timestamp_seconds")["events"] >= int(ran)
    assert 0 <= per_sink(after, "tally_flusher_last_duration_seconds")["events"] < 30


def test_failed_archiver_run_counts_an_error_and_keeps_the_backlog(redis_client, redis_url):
    """TimescaleDB unreachable: an error, no last success, and the backlog still owed."""
    settings = make_settings(redis_url, "postgresql://tally@127.0.0.1:1/tally",
                             "http://127.0.0.1:1", shards=SHARDS, sink_connect_timeout=1)
    config = CountingConfig.from_settings(settings)
    apply_batch(redis_client, config, views(range(8)))
    assert not _archiver_step(redis_client, settings, config)
    samples = scrape(redis_client, config, time.time())
    assert per_sink(samples, "tally_flusher_errors_total")["events"] == 1
    assert "events" in per_sink(samples, "tally_flusher_last_run_timestamp_seconds")
    assert "events" not in per_sink(samples, "tally_flusher_last_success_timestamp_seconds")
    assert per_counter(samples, "tally_event_log_backlog_events") == {"views": 8}


def test_log_off_reports_no_event_log_series(redis_client):
    """TALLY_EVENT_LOG=off: no tally_event_log_* series and no archiver among the sinks."""
    config = CountingConfig(shards=SHARDS, event_log=False)
    apply_batch(redis_client, config, views(range(5)))
    redis_client.hset(keys.flusher_health(archive.NAME), mapping={
        "last_run": "1", "last_duration_seconds": "0.1", "rows_total": "1", "errors_total": "0"})
    samples = scrape(redis_client, config, time.time())
    assert not [name for name, _ in samples if name.startswith("tally_event_log")]
    assert not [labels for _, labels in samples if ("sink", archive.NAME) in labels]


def test_promtool_accepts_the_exposition(redis_client):
    """`promtool check metrics` finds nothing wrong with the event log's names and types."""
    config = CountingConfig(shards=SHARDS, event_log_max=LOG_MAX)
    apply_batch(redis_client, config, views(range(6)))
    text = generate_latest(registry_for(redis_client, config, time.time()))
    assert b"tally_event_log_backlog_events{" in text and b"tally_event_log_max_events " in text
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          timeout=60)
    problems = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, problems


def test_event_log_alerts_read_series_the_exporter_writes(redis_client):
    """Every tally_event_log_* name in the alert rules is a family a real scrape yields."""
    rules = yaml.safe_load((PROJECT_ROOT / "prometheus" / "rules" / "tally.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]
             if rule.get("alert", "").startswith("TallyEventLog")]
    read = {name for expr in exprs for name in re.findall(r"tally_event_log_\w+", expr)}
    apply_batch(redis_client, CountingConfig(shards=SHARDS), views(range(3)))
    written = {family.name for family in registry_for(
        redis_client, CountingConfig(shards=SHARDS), time.time()).collect()}
    assert len(exprs) == 2 and read and read <= written
