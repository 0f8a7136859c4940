"""Alert delivery fixtures: a real webhook receiver; Prometheus sending to a real Alertmanager."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tally.settings import Settings
from tally.stack import services
from tally.stack.alertmanager import alertmanager_config
from tally.stack.process import free_ports

# Short waits so a test sees its notification within seconds; the route is Tally's own.
FAST = Settings(alert_group_wait=1, alert_group_interval=1, alert_repeat_interval=3600)


@dataclass
class Webhook:
    """A receiver's URL and the (arrival time, JSON body) of every notification posted to it."""

    url: str
    received: queue.Queue = field(default_factory=queue.Queue)

    def next(self, timeout: float) -> tuple[float, dict]:
        """The next notification, waiting up to timeout seconds for it."""
        return self.received.get(timeout=timeout)


def _handler(webhook: Webhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            webhook.received.put((time.time(), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format, *args) -> None:  # noqa: A002
            """Quiet."""

    return Handler


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A real HTTP server on a free loopback port that records every POST it gets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    hook = Webhook(f"http://127.0.0.1:{server.server_port}/notify")
    server.RequestHandlerClass = _handler(hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture
def alerting(tmp_path: Path) -> Iterator[Callable[..., tuple[str, str]]]:
    """Factory: alerting(webhook_url, rule_file, {job: [targets]}) -> (Prometheus, AM URLs).

    Starts a real Alertmanager with Tally's route (short group waits) posting
    to webhook_url, then a real Prometheus evaluating rule_file every second
    and sending its alerts to that Alertmanager; both stop after the test.
    """
    with ExitStack() as stack:

        def start(webhook_url: str, rule_file: Path,
                  scrape: dict[str, list[str]]) -> tuple[str, str]:
            am_port, prom_port = free_ports(2)
            am_config = tmp_path / "alertmanager.yml"
            am_config.write_text(alertmanager_config(webhook_url, "test", FAST))
            am = services.alertmanager(am_port, tmp_path / "alertmanager", am_config)
            stack.enter_context(services.running(am, tmp_path / "alertmanager.log"))
            prom_config = tmp_path / "prometheus.yml"
            prom_config.write_text(services.prometheus_config(
                scrape, "1s", (str(rule_file),), (f"127.0.0.1:{am_port}",)))
            prom = services.prometheus(prom_port, tmp_path / "prometheus", prom_config)
            stack.enter_context(services.running(prom, tmp_path / "prometheus.log"))
            return prom.url, am.url

        yield start
