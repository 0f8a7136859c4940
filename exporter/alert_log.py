"""`POST /alerts` on the exporter: Alertmanager's default receiver, one log line per alert.

When no TALLY_ALERT_WEBHOOK_URL is set, the local stack's and compose's
Alertmanager post here, so a firing alert always leaves a trace an operator
can find (`tally.alerts` lines in the exporter's log) instead of being
dropped for want of a receiver. The body is Alertmanager's webhook JSON
(version 4): a notification of one group, with the alerts it holds.

    {"ts": 1796313181.004, "level": "warning", "logger": "tally.alerts", "pid": 4242,
     "message": "alert firing: TallyFlushStale", "status": "firing",
     "alertname": "TallyFlushStale", "labels": {...}, "annotations": {"summary": ...},
     "starts_at": "2026-12-04T18:03:18Z", "receiver": "tally-log", "group_key": "{}:{...}"}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

log = logging.getLogger("tally.alerts")
PATH = "/alerts"
MAX_BODY_BYTES = 1 << 20  # Alertmanager caps a notification far below this

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def log_notification(notification: dict) -> int:
    """Log each alert of a webhook notification as one line; return how many were logged."""
    alerts = notification.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("a notification holds a list of alerts under 'alerts'")
    for alert in alerts:
        log_alert(alert, notification)
    return len(alerts)


def log_alert(alert: dict, notification: dict) -> None:
    """One line: firing alerts as warnings, resolved ones as info."""
    labels = alert.get("labels") or {}
    status = alert.get("status", "unknown")
    fields = {"status": status, "alertname": labels.get("alertname", ""), "labels": labels,
              "annotations": alert.get("annotations") or {},
              "starts_at": alert.get("startsAt"), "receiver": notification.get("receiver"),
              "group_key": notification.get("groupKey")}
    level = logging.INFO if status == "resolved" else logging.WARNING
    log.log(level, "alert %s: %s", status, fields["alertname"], extra={"fields": fields})


def _answer(start_response: Callable, status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode() + b"\n"]


def receive(environ: dict, start_response: Callable) -> list[bytes]:
    """Read one notification and log it; a body that is not one answers 400 and is logged."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 < length <= MAX_BODY_BYTES:
        return _answer(start_response, "400 Bad Request",
                       f"need a JSON body of 1 to {MAX_BODY_BYTES} bytes with Content-Length")
    try:
        count = log_notification(json.loads(environ["wsgi.input"].read(length)))
    except (ValueError, TypeError, AttributeError) as exc:
        log.error("alert notification unreadable", extra={"fields": {"error": str(exc)}})
        return _answer(start_response, "400 Bad Request", f"not a webhook notification: {exc}")
    return _answer(start_response, "200 OK", f"logged {count} alerts")


def with_alert_log(app: WsgiApp) -> WsgiApp:
    """Wrap the metrics app: POST /alerts is the logging receiver, anything else goes to app."""
    def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            if environ.get("REQUEST_METHOD") != "POST":
                start_response("405 Method Not Allowed", [("Allow", "POST")])
                return [b"POST an Alertmanager webhook notification\n"]
            return receive(environ, start_response)
        return app(environ, start_response)
    return dispatch
