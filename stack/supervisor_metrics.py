"""The supervisor's /metrics: how often each stack process was restarted and whether it is up.

Served on TALLY_SUPERVISOR_PORT and scraped by the local Prometheus as job
`tally-stack`, so a process that crashes and comes back is still visible
after the fact. A custom collector reads the supervisor's children on each
scrape:

    tally_stack_restarts_total{process="redis"} 1.0
    tally_stack_process_up{process="redis"} 1.0
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tally.errors import ServiceError


class StackCollector:
    """Restarts and up state of the supervisor's children, fresh on each scrape."""

    def __init__(self, children: list):
        self.children = children  # the supervisor's own list: entries appear as they start

    def collect(self):
        restarts = CounterMetricFamily("tally_stack_restarts", "Restarts of a stack process "
                                       "after it exited unexpectedly", labels=["process"])
        up = GaugeMetricFamily("tally_stack_process_up", "1 while a stack process runs and "
                               "answers its readiness probe", labels=["process"])
        for child in list(self.children):
            restarts.add_metric([child.name], child.restarts)
            up.add_metric([child.name], 1 if child.up else 0)
        yield restarts
        yield up


def serve_metrics(port: int, children: list) -> WSGIServer:
    """Serve the children's metrics on 127.0.0.1:port in a daemon thread; return the server."""
    registry = CollectorRegistry()
    registry.register(StackCollector(children))
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ServiceError(f"the supervisor cannot listen on 127.0.0.1:{port} ({exc}); "
                           "choose another port with TALLY_SUPERVISOR_PORT") from None
    return server
