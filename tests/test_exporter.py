"""The exporter's collector and HTTP server against a real Redis after real ingestion."""

from __future__ import annotations

import pytest
import redis
import requests
from prometheus_client import CollectorRegistry

from tally import keys
from tally.events import Event
from tally.exporter.collector import TallyCollector
from tally.exporter.server import serve
from tally.exporter.snapshot import MAX_BOARDS, read_snapshot
from tally.ingest.counting import leaderboard
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import handoff
from tally.stack.process import free_ports

DAY = 20_400  # 2025-11-08 (UTC day index)
NOW = DAY * 86400 + 12 * 3600 + 5  # noon, so the previous hour is the same day
SCRAPED_AT = NOW + 2.5  # so the marks of a batch applied at NOW are 2.5 s old
CONFIG = CountingConfig(shards=4)
FLUSHER = {"last_run": str(NOW - 1), "last_success": str(NOW - 20),
           "last_duration_seconds": "0.25", "rows_total": "1200", "errors_total": "3",
           "skipped_total": "4", "last_error": "timeout"}


def demo_events(now: int = NOW) -> list[Event]:
    """Seven counted views (one more a duplicate), one like; users a..e."""
    return [
        Event("views", "video:1", now, id="e1", user="a"),
        Event("views", "video:1", now, id="e2", user="b"),
        Event("views", "video:1", now, id="e3", user="c"),
        Event("views", "video:2", now, id="e4", user="a"),
        Event("views", "video:2", now, value=5, id="e5", user="d"),
        Event("views", "video:3", now),
        Event("views", "video:3", now - 3600, id="e7", user="e"),
        Event("views", "video:1", now, id="e1", user="a"),  # a retry: duplicate
        Event("likes", "post:9", now, id="l1", user="a"),
    ]


def load_demo(client, now: int = NOW) -> None:
    """Ingest demo_events, two leaderboards and the timescale flusher's health hash."""
    apply_batch(client, CONFIG, demo_events(now), now=now)
    for member, score in (("ann", 3), ("bob", 2), ("cy", 1)):
        leaderboard.update(client, "season1", member, score)
    leaderboard.update(client, "weekly", "ann", 1)
    client.hset(keys.flusher_health("timescale"), mapping=FLUSHER)


EXPECTED = {
    ("tally_up", ()): 1,
    ("tally_events_total", (("counter", "likes"),)): 1,
    ("tally_events_total", (("counter", "views"),)): 7,
    ("tally_event_value_total", (("counter", "likes"),)): 1,
    ("tally_event_value_total", (("counter", "views"),)): 11,
    ("tally_duplicates_total", (("counter", "likes"),)): 0,
    ("tally_duplicates_total", (("counter", "views"),)): 1,
    ("tally_unique_users", (("counter", "likes"), ("window", "hour"))): 1,
    ("tally_unique_users", (("counter", "likes"), ("window", "day"))): 1,
    ("tally_unique_users", (("counter", "views"), ("window", "hour"))): 4,
    ("tally_unique_users", (("counter", "views"), ("window", "day"))): 5,
    ("tally_top_key_events", (("counter", "likes"), ("key", "post:9"), ("window", "day"))): 1,
    ("tally_top_key_events", (("counter", "views"), ("key", "video:2"), ("window", "day"))): 6,
    ("tally_top_key_events", (("counter", "views"), ("key", "video:1"), ("window", "day"))): 3,
    ("tally_flusher_lag_seconds", (("sink", "influx"),)): 2.5,
    ("tally_flusher_lag_seconds", (("sink", "timescale"),)): 2.5,
    ("tally_flusher_lag_seconds", (("sink", "events"),)): 0,  # see the event log below
    ("tally_flusher_last_duration_seconds", (("sink", "timescale"),)): 0.25,
    ("tally_flusher_last_run_timestamp_seconds", (("sink", "timescale"),)): NOW - 1,
    ("tally_flusher_last_success_timestamp_seconds", (("sink", "timescale"),)): NOW - 20,
    ("tally_flusher_rows_total", (("sink", "timescale"),)): 1200,
    ("tally_flusher_errors_total", (("sink", "timescale"),)): 3,
    ("tally_flusher_skipped_points_total", (("sink", "timescale"),)): 4,
    ("tally_dirty_buckets", (("sink", "influx"),)): 5,
    ("tally_dirty_buckets", (("sink", "timescale"),)): 5,
    ("tally_leaderboard_members", (("board", "season1"),)): 3,
    ("tally_leaderboard_members", (("board", "weekly"),)): 1,
    ("tally_redis_memory_max_bytes", ()): 0,  # the test servers run without maxmemory
    # The event log (on by default): one entry per batch and shard; video:1 and video:3 share
    # a shard (5 events), video:2 has another. The scrape's clock (2025) is before Redis' time
    # of the appends, so the oldest entry counts as new (tests/test_exporter_event_log.py
    # measures ages on the real clock).
    ("tally_event_log_backlog_events", (("counter", "likes"),)): 1,
    ("tally_event_log_backlog_events", (("counter", "views"),)): 7,
    ("tally_event_log_backlog_entries", (("counter", "likes"),)): 1,
    ("tally_event_log_backlog_entries", (("counter", "views"),)): 2,
    ("tally_event_log_fullest_stream_events", (("counter", "likes"),)): 1,
    ("tally_event_log_fullest_stream_events", (("counter", "views"),)): 5,
    ("tally_event_log_oldest_age_seconds", (("counter", "likes"),)): 0,
    ("tally_event_log_oldest_age_seconds", (("counter", "views"),)): 0,
    ("tally_event_log_max_events", ()): CONFIG.event_log_max,
    ("tally_scrape_errors_total", ()): 0,
}
MEASURED = ("tally_redis_memory_used_bytes", "tally_redis_keys", "tally_scrape_duration_seconds")
DRAINED = {("tally_flusher_lag_seconds", (("sink", "influx"),)): 0,
           ("tally_flusher_lag_seconds", (("sink", "timescale"),)): 0,
           ("tally_flusher_lag_seconds", (("sink", "events"),)): 0}


def scrape(client, top_n: int = 2, at: float = SCRAPED_AT) -> dict:
    """Collect once on a fresh registry; {(sample name, sorted labels): value}."""
    registry = CollectorRegistry()
    registry.register(TallyCollector(client, CONFIG, top_n=top_n, clock=lambda: at))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples}


def _split(samples: dict) -> tuple[dict, dict]:
    measured = {k: v for k, v in samples.items() if k[0] in MEASURED}
    return {k: v for k, v in samples.items() if k[0] not in MEASURED}, measured


def test_every_metric_after_real_ingestion(redis_client):
    load_demo(redis_client)
    exact, measured = _split(scrape(redis_client))
    assert exact == EXPECTED
    assert measured[("tally_redis_keys", ())] == redis_client.dbsize()
    assert measured[("tally_redis_memory_used_bytes", ())] > 0
    assert 0 < measured[("tally_scrape_duration_seconds", ())] < 5


def test_empty_redis_reports_up_and_nothing_per_counter(redis_client):
    exact, _ = _split(scrape(redis_client))
    assert exact == {("tally_up", ()): 1, ("tally_scrape_errors_total", ()): 0,
                     ("tally_dirty_buckets", (("sink", "influx"),)): 0,
                     ("tally_dirty_buckets", (("sink", "timescale"),)): 0,
                     ("tally_redis_memory_max_bytes", ()): 0,
                     ("tally_event_log_max_events", ()): CONFIG.event_log_max, **DRAINED}


def test_unreachable_redis_reports_down_and_no_stale_numbers():
    client = redis.Redis(port=free_ports(1)[0], socket_timeout=1, socket_connect_timeout=1)
    registry = CollectorRegistry()
    registry.register(TallyCollector(client, CONFIG))
    names = {s.name: s.value for family in registry.collect() for s in family.samples}
    client.close()
    assert set(names) == {"tally_up", "tally_scrape_errors_total", "tally_scrape_duration_seconds"}
    assert names["tally_up"] == 0 and names["tally_scrape_errors_total"] == 1


def test_top_n_bounds_per_key_series(redis_client):
    load_demo(redis_client)
    exact, _ = _split(scrape(redis_client, top_n=1))
    top = {labels for name, labels in exact if name == "tally_top_key_events"}
    assert top == {(("counter", "likes"), ("key", "post:9"), ("window", "day")),
                   (("counter", "views"), ("key", "video:2"), ("window", "day"))}


def test_cluster_sums_shards_and_merges_uniques(redis_cluster_client):
    load_demo(redis_cluster_client)
    exact, _ = _split(scrape(redis_cluster_client))
    assert exact == EXPECTED


@pytest.fixture
def exporter_url(redis_client):
    """URL of a real exporter HTTP server on a free port, reading redis_client."""
    registry = CollectorRegistry()
    registry.register(TallyCollector(redis_client, CONFIG, top_n=2, clock=lambda: SCRAPED_AT))
    server, thread = serve(registry, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_serves_prometheus_text(redis_client, exporter_url):
    load_demo(redis_client)
    response = requests.get(exporter_url, timeout=5)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'tally_events_total{counter="views"} 7.0\n' in response.text


def test_http_negotiates_openmetrics(redis_client, exporter_url):
    load_demo(redis_client)
    response = requests.get(exporter_url, timeout=5,
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert 'tally_events_total{counter="views"} 7.0\n' in response.text
    assert response.text.endswith("# EOF\n")


def test_leaderboards_come_from_the_registry_capped(redis_client):
    for board in [f"b{i:03}" for i in range(MAX_BOARDS + 1)]:
        leaderboard.update(redis_client, board, "ann", 1)
    snap = read_snapshot(redis_client, CountingConfig(), top_n=0)
    assert [board for board, _ in snap.boards] == [f"b{i:03}" for i in range(MAX_BOARDS)]
    assert {size for _, size in snap.boards} == {1}


def _lags(client, at: float) -> dict:
    return {labels[0][1]: v for (name, labels), v in scrape(client, top_n=0, at=at).items()
            if name == "tally_flusher_lag_seconds"}


def test_lag_counts_in_flight_marks_of_a_dead_flusher(redis_client):
    """Marks a killed run took are owed to the sink: lag is their age, not the dirty set's."""
    load_demo(redis_client)
    shards = handoff.discover(redis_client, CONFIG.shards)
    assert handoff.take(redis_client, shards, "timescale", "dead", 1000, deadline=NOW + 1)
    apply_batch(redis_client, CONFIG, [Event("views", "video:1", NOW + 60)], now=NOW + 60)
    assert _lags(redis_client, at=NOW + 100) == {"timescale": 100, "influx": 100, "events": 0}
    handoff.release(redis_client, shards, "timescale", "dead")
    assert _lags(redis_client, at=NOW + 100) == {"timescale": 40, "influx": 100, "events": 0}


@pytest.mark.parametrize("cluster", [False, True])
def test_memory_against_maxmemory(cluster, request):
    """maxmemory of every primary: summed limit, and the fullest primary's used ratio."""
    client = request.getfixturevalue("redis_cluster_client" if cluster else "redis_client")
    nodes = client.get_primaries() if cluster else [None]
    limits = [64 << 20, 32 << 20, 48 << 20][:len(nodes)]

    def set_limits(values) -> None:
        for node, value in zip(nodes, values, strict=True):
            target = {"target_nodes": node} if cluster else {}
            client.config_set("maxmemory", value, **target)

    set_limits(limits)
    try:
        samples = scrape(client, top_n=0)
        infos = [client.info("memory", target_nodes=n) for n in nodes] if cluster else \
            [client.info("memory")]
    finally:
        set_limits([0] * len(nodes))
    assert samples[("tally_redis_memory_max_bytes", ())] == sum(limits)
    ratio = samples[("tally_redis_memory_used_ratio", ())]
    assert 0 < ratio < 1
    assert ratio == pytest.approx(max(i["used_memory"] / i["maxmemory"] for i in infos), rel=0.2)
