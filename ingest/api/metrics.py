"""The ingest service's own Prometheus metrics, correct under several gunicorn workers.

Under `tally serve`, PROMETHEUS_MULTIPROC_DIR is set before prometheus_client
is imported, so every worker writes its samples to files there and /metrics
merges all workers' files (dead workers' gauges are dropped by gunicorn's
child_exit hook). Without it (tests, a single process) each app keeps its own
registry, so apps built side by side never share counts.

    tally_ingest_http_requests_total{route="/v1/events",method="POST",status="200"} 3.0
    tally_ingest_http_request_duration_seconds_count{route="/v1/events",method="POST"} 3.0
    tally_ingest_events_total{outcome="accepted"} 2997.0
"""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("accepted", "duplicate", "rejected")
bp = Blueprint("metrics", __name__)


class Metrics:
    """Request, latency and event-outcome metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tally_ingest_http_requests_total", "HTTP requests answered, by route template",
            ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram(
            "tally_ingest_http_request_duration_seconds", "Time to answer an HTTP request",
            ["route", "method"], buckets=BUCKETS, registry=self.registry)
        self.events = Counter(
            "tally_ingest_events_total", "Events received, by outcome", ["outcome"],
            registry=self.registry)
        for outcome in OUTCOMES:
            self.events.labels(outcome)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)

    def count_events(self, outcome: str, n: int) -> None:
        """Add n events with this outcome."""
        if n:
            self.events.labels(outcome).inc(n)

    def exposition(self) -> bytes:
        """The text exposition: every worker's samples when in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def metrics() -> Metrics:
    """The current app's Metrics."""
    return current_app.extensions["tally.metrics"]


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus scrape endpoint (open: it carries route templates, never keys)."""
    return Response(metrics().exposition(), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})
