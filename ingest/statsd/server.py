"""`tally statsd`: the StatsD listener in the foreground, with its own /metrics."""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import CollectorRegistry, start_http_server

from tally import logs
from tally.errors import ServiceError
from tally.ingest.statsd.listener import Listener
from tally.ingest.statsd.mapping import Mapping
from tally.ingest.statsd.metrics import StatsCollector
from tally.redis_connect import connect, disconnect
from tally.settings import Settings

log = logging.getLogger("tally.ingest.statsd")


def serve_metrics(listener: Listener, host: str, port: int):
    """Serve the listener's counters on http://host:port/metrics; return (server, thread)."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(listener.stats))
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ServiceError(f"statsd cannot serve /metrics on {host}:{port}: {exc}") from None


def start(settings: Settings, client) -> tuple[Listener, object]:
    """A started listener on the configured ports and its metrics server."""
    listener = Listener(settings, client, Mapping.from_file(settings.statsd_mapping_file))
    try:
        listener.start(settings.statsd_host, settings.statsd_port)
    except OSError as exc:
        raise ServiceError(f"statsd cannot listen on {settings.statsd_host}:"
                           f"{settings.statsd_port}: {exc}") from None
    server, _thread = serve_metrics(listener, settings.statsd_host, settings.statsd_metrics_port)
    return listener, server


def main(args, settings: Settings) -> int:
    """Listen until SIGTERM or Ctrl-C, then apply what was received and exit."""
    logs.setup()
    client = connect(settings)
    listener, server = start(settings, client)
    log.info("statsd listening", extra={"fields": {
        "udp_tcp": f"{settings.statsd_host}:{settings.statsd_port}",
        "metrics": f"http://{settings.statsd_host}:{settings.statsd_metrics_port}/metrics"}})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
        server.shutdown()
        server.server_close()
        disconnect(client)
    return 0
