"""`tally exporter`: serve /metrics (Prometheus text or OpenMetrics, by Accept header).

The same server takes Alertmanager's notifications on POST /alerts when no other
webhook is configured (tally.exporter.alert_log).
"""

from __future__ import annotations

import logging
import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from tally import logs
from tally.errors import ServiceError
from tally.exporter.alert_log import with_alert_log
from tally.exporter.collector import TallyCollector
from tally.ingest.counting.config import CountingConfig
from tally.redact import redact
from tally.redis_connect import connect, disconnect
from tally.settings import Settings

log = logging.getLogger("tally.exporter")
# A scrape must finish well inside Prometheus' default 10 s scrape timeout.
REDIS_TIMEOUT = 2.0


def build_registry(client, settings: Settings) -> CollectorRegistry:
    """A fresh registry holding only Tally's collector."""
    registry = CollectorRegistry()
    config = CountingConfig.from_settings(settings)
    registry.register(TallyCollector(client, config, top_n=settings.exporter_top_n))
    return registry


class _QuietHandler(WSGIRequestHandler):
    """No access line per scrape on stderr (prometheus_client's server is quiet too)."""

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        """Drop the line."""


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve /metrics and POST /alerts in a daemon thread; port 0 picks a free port.

    prometheus_client's own start_http_server serves the metrics app alone,
    so the same threading server is built here around the wrapped app.
    """
    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = make_server(host, port, with_alert_log(make_wsgi_app(registry)), Server,
                             handler_class=_QuietHandler)
    except OSError as exc:
        raise ServiceError(f"exporter cannot listen on {host}:{port}: {exc}") from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def main(args, settings: Settings) -> int:
    """Run the exporter in the foreground until interrupted."""
    logs.setup()
    try:
        client = connect(settings, REDIS_TIMEOUT)
    except redis.RedisError as exc:  # a cluster client connects at construction
        raise ServiceError(f"exporter cannot reach Redis at {redact(settings.redis_url)}: "
                           f"{exc}") from None
    server, thread = serve(build_registry(client, settings), settings.exporter_host,
                           settings.exporter_port)
    log.info("exporter serving http://%s:%d/metrics", *server.server_address[:2])
    try:
        thread.join()
    finally:
        server.shutdown()
        server.server_close()
        disconnect(client)
    return 0
