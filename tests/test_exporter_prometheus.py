"""A real Prometheus scrapes a real exporter, with the repo's recording rules loaded."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client import CollectorRegistry

from tally.events import Event
from tally.exporter.collector import TallyCollector
from tally.exporter.server import serve
from tally.ingest.counting.batch import apply_batch
from tally.settings import PROJECT_ROOT
from tests.test_exporter import CONFIG, NOW, SCRAPED_AT, load_demo

RULES = str(PROJECT_ROOT / "prometheus" / "rules" / "tally.yml")


def promql(url: str, query: str) -> list[dict]:
    """Instant query; the result vector."""
    body = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(url: str, query: str, check, timeout: float = 30.0) -> list[dict]:
    """Poll a query until check(result) holds; fail with the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = promql(url, query)
        if check(result) or time.monotonic() > deadline:
            assert check(result), f"{query} -> {result}"
            return result
        time.sleep(0.5)


@pytest.fixture
def scraped(redis_client, prometheus_scrape):
    """Prometheus URL scraping a live exporter (job tally-exporter) every second."""
    registry = CollectorRegistry()
    registry.register(TallyCollector(redis_client, CONFIG, top_n=2, clock=lambda: SCRAPED_AT))
    server, thread = serve(registry, "127.0.0.1", 0)
    yield prometheus_scrape([f"127.0.0.1:{server.server_port}"], job="tally-exporter",
                            rule_files=(RULES,))
    server.shutdown()
    server.server_close()
    thread.join()


def values(result: list[dict], label: str) -> dict[str, float]:
    """{label value: sample value} of an instant vector."""
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def test_prometheus_scrapes_exporter_and_records_rates(redis_client, scraped):
    load_demo(redis_client)
    found = wait_for(scraped, 'tally_events_total{job="tally-exporter"}',
                     lambda r: values(r, "counter") == {"views": 7.0, "likes": 1.0})
    assert {r["metric"]["job"] for r in found} == {"tally-exporter"}
    top = promql(scraped, 'tally_top_key_events{counter="views"}')
    assert values(top, "key") == {"video:2": 6.0, "video:1": 3.0}
    # More views between scrapes: the recorded per-counter rate turns positive.
    for i in range(6):
        apply_batch(redis_client, CONFIG, [Event("views", "video:9", NOW, id=f"x{i}")] * 10,
                    now=NOW)
        time.sleep(0.5)
    rates = wait_for(scraped, "counter:tally_events:rate1m",
                     lambda r: values(r, "counter").get("views", 0) > 0)
    assert values(rates, "counter")["likes"] == 0
    ratio = wait_for(scraped, "counter:tally_duplicates:ratio_rate5m", lambda r: len(r) == 2)
    assert 0 < values(ratio, "counter")["views"] < 1
    lag = wait_for(scraped, ":tally_flusher_lag_seconds:max", lambda r: len(r) == 1)
    assert float(lag[0]["value"][1]) == 2.5
