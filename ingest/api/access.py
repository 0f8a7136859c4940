"""One log line per request (the access log), and the request metrics taken at the same point.

The request's facts are the record's fields, so tally.logs writes them as
keys of the JSON line (its pid tells which gunicorn worker answered).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from tally.ingest.api.metrics import metrics

log = logging.getLogger("tally.ingest.access")


def _start() -> None:
    g.started = time.perf_counter()


def note_events(accepted: int = 0, duplicates: int = 0, rejected: int = 0) -> None:
    """Record a batch's outcome for this request's log line and the event metrics."""
    g.events = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
    m = metrics()
    m.count_events("accepted", accepted)
    m.count_events("duplicate", duplicates)
    m.count_events("rejected", rejected)


def _finish(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule else "unmatched"
    metrics().observe(route, request.method, response.status_code, seconds)
    line = {"method": request.method, "path": request.path, "route": route,
            "status": response.status_code, "duration_ms": round(seconds * 1000, 2),
            "remote": request.remote_addr, "bytes_in": request.content_length}
    if "events" in g:
        line["events"] = g.events
    log.info("%s %s %d", request.method, request.path, response.status_code,
             extra={"fields": line})
    return response


def init_app(app: Flask) -> None:
    """Time every request; log and count it when its response is ready."""
    app.before_request(_start)
    app.after_request(_finish)
