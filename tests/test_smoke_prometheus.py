"""Smoke test: Prometheus scrapes a tiny HTTP target and answers PromQL."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests


class MetricHandler(BaseHTTPRequestHandler):
    """Serve one gauge in the Prometheus text format."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b"# TYPE tally_smoke_value gauge\ntally_smoke_value 42\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        """Keep test output quiet."""


@pytest.fixture
def metric_target():
    """host:port of a thread serving tally_smoke_value 42."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def instant_query(url, promql, timeout=20.0):
    """Poll an instant query until it returns a sample."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
        if result["data"]["result"]:
            return result["data"]["result"]
        time.sleep(0.2)
    raise AssertionError(f"no result for {promql} within {timeout}s")


def test_prometheus_scrapes_a_target(prometheus_scrape, metric_target):
    url = prometheus_scrape([metric_target], job="smoke")
    result = instant_query(url, 'tally_smoke_value{job="smoke"}')
    assert [sample["value"][1] for sample in result] == ["42"]
