"""`promtool check metrics` on real scrapes of every Tally /metrics endpoint.

promtool's linter knows Prometheus' naming rules (reserved `_count`/`_sum`/
`_bucket` suffixes, `_total` on counters, base units, help text), so each
endpoint is served over real HTTP after real traffic, so that every metric
family has samples, and the scraped text is piped to it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
import requests
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

from tally.exporter.collector import TallyCollector
from tally.exporter.server import serve
from tally.ingest.api import close_app
from tally.ingest.statsd.server import serve_metrics
from tests.statsd_support import listening, send_udp, statsd_settings, wait_until
from tests.test_api_support import WRITE, gunicorn, make_app
from tests.test_exporter import CONFIG, SCRAPED_AT, load_demo


def promtool_check(text: str) -> subprocess.CompletedProcess:
    """Pipe an exposition to `promtool check metrics`; the finished process."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/bootstrap (package prometheus)"
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)


def scrape(url: str) -> str:
    """GET /metrics in the classic text format, as Prometheus 2 asks for it."""
    response = requests.get(url, headers={"Accept": "text/plain;version=0.0.4"}, timeout=10)
    assert response.ok, response.status_code
    return response.text


def scrape_served(server, thread: threading.Thread) -> str:
    """Scrape a server that serve()/serve_metrics() started on a free port, then stop it."""
    try:
        return scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def assert_clean(text: str, expected_family: str) -> None:
    """promtool exits 0 and prints no problem line; the scrape is not trivially empty."""
    assert f"# TYPE {expected_family} " in text, text[:2000]
    checked = promtool_check(text)
    problems = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and not problems, problems


def test_exporter_scrape_passes_promtool(redis_client):
    load_demo(redis_client)
    registry = CollectorRegistry()
    registry.register(TallyCollector(redis_client, CONFIG, top_n=2, clock=lambda: SCRAPED_AT))
    text = scrape_served(*serve(registry, "127.0.0.1", 0))
    assert 'tally_top_key_events{counter="views",key="video:2",window="day"} 6.0' in text
    assert_clean(text, "tally_top_key_events")


@pytest.fixture
def ingest_url(redis_url, redis_client):
    """The ingest API served over real HTTP on a free port."""
    app = make_app(redis_url)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()
    close_app(app)


def test_ingest_api_scrape_passes_promtool(ingest_url):
    events = [{"counter": "views", "key": "video:1", "id": "a"},
              {"counter": "views", "key": "video:1", "id": "a"}, {"counter": "BAD", "key": "x"}]
    posted = requests.post(f"{ingest_url}/v1/events", json=events, timeout=10,
                           headers={"Authorization": f"Bearer {WRITE}"})
    assert posted.status_code < 500, posted.text
    text = scrape(f"{ingest_url}/metrics")
    assert "tally_ingest_http_request_duration_seconds_bucket" in text
    assert_clean(text, "tally_ingest_events_total")


def test_tally_serve_multiprocess_scrape_passes_promtool(redis_url, redis_client, tmp_path):
    """Under gunicorn the exposition merges every worker's files: check that text too."""
    with gunicorn(redis_url, 2, tmp_path) as (base, _master):
        for i in range(4):
            requests.post(f"{base}/v1/events", json={"counter": "views", "key": "k", "id": str(i)},
                          headers={"Authorization": f"Bearer {WRITE}"}, timeout=10)
        text = scrape(f"{base}/metrics")
    assert 'tally_ingest_events_total{outcome="accepted"} 4.0' in text, text
    assert_clean(text, "tally_ingest_events_total")


def test_statsd_listener_scrape_passes_promtool(redis_url, redis_client):
    with listening(redis_client, statsd_settings(redis_url)) as (listener, (udp, _tcp)):
        send_udp(udp, b"app.signups:1|c", b"app.load:3|g", b"not a sample")
        wait_until(lambda: sum(listener.stats.samples.values()) >= 1
                   and sum(listener.stats.malformed.values()) >= 1)
        text = scrape_served(*serve_metrics(listener, "127.0.0.1", 0))
    assert 'tally_statsd_samples_total{type="c"} 1.0' in text
    assert_clean(text, "tally_statsd_samples_total")
