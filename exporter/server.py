"""`tally exporter`: serve /metrics (Prometheus text or OpenMetrics, by Accept header)."""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, start_http_server

from tally import logs
from tally.errors import ServiceError
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


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Start serving /metrics in a daemon thread; port 0 picks a free port (see server_port)."""
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ServiceError(f"exporter cannot listen on {host}:{port}: {exc}") from None


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
