"""Smoke test: Prometheus scrapes a tiny HTTP target and answers PromQL; configs pass promtool."""

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tally.settings import load_settings
from tally.stack import prometheus_yml, services


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


@pytest.mark.parametrize("name", sorted(prometheus_yml.COMMITTED))
def test_committed_config_is_what_the_generator_writes(name):
    """prometheus/<name> is output: rerun `python -m tally.stack.prometheus_yml` after a change."""
    committed = (prometheus_yml.PROMETHEUS_DIR / name).read_text()
    assert committed == prometheus_yml.committed_config(name)


@pytest.mark.parametrize("config", [
    prometheus_yml.stack_config(load_settings({}, exporter_port=19841, ingest_port=18080)),
    services.prometheus_config({"smoke": ["127.0.0.1:1"]}, "1s", (prometheus_yml.RULES,)),
], ids=["local-stack", "test-fixture"])
def test_promtool_accepts_the_generated_config(tmp_path, config):
    """The local stack's and the fixtures' configs load, with every rule file (relative or not)."""
    path = tmp_path / "prometheus.yml"
    (tmp_path / "rules").symlink_to(prometheus_yml.PROMETHEUS_DIR / "rules")
    path.write_text(config)
    done = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                          text=True, timeout=60)
    rule_files = len(list((prometheus_yml.PROMETHEUS_DIR / "rules").glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {rule_files} rule files found" in done.stdout
