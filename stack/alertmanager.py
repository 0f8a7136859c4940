"""The Alertmanager configurations of the local stack and of docker-compose.

One producer, `alertmanager_config`, writes both, as tally.stack.prometheus_yml
does for Prometheus, so the two cannot drift: `tally up` writes its copy into
the data folder at each start; compose mounts prometheus/alertmanager.yml,
committed output of `python -m tally.stack.prometheus_yml` that
tests/test_alert_delivery.py compares with what this module would write.

The one route sends every alert to one webhook: TALLY_ALERT_WEBHOOK_URL, or,
when that is empty, the exporter's `POST /alerts`, which logs each alert as a
line (tally.exporter.alert_log), so an alert is never dropped for want of a
receiver.
"""

from __future__ import annotations

import json
from pathlib import Path

from tally.settings import PROJECT_ROOT, Settings
from tally.stack import rundir

COMMITTED = PROJECT_ROOT / "prometheus" / "alertmanager.yml"
COMPOSE_EXPORTER_HOST = "tally-exporter"  # the exporter's compose service name
LOG_RECEIVER = "tally-log"
WEBHOOK_RECEIVER = "webhook"
HEADER = ("# Written by `python -m tally.stack.prometheus_yml` (JSON, which is YAML too);\n"
          "# change stack/alertmanager.py and rerun it rather than editing this file.\n"
          "# To post compose's alerts elsewhere, set the receiver's url (docs/observability.md).\n")


def log_receiver_url(settings: Settings, exporter_host: str) -> str:
    """The exporter's logging receiver, reached at exporter_host."""
    return f"http://{exporter_host}:{settings.exporter_port}/alerts"


def alertmanager_config(webhook_url: str, receiver: str, settings: Settings) -> str:
    """Return an Alertmanager config routing every alert to one webhook (JSON, which is YAML).

    Grouped by alert name, so the down alerts of several targets arrive as one
    notification; `send_resolved` so the receiver also learns when it is over.
    """
    route = {"receiver": receiver, "group_by": ["alertname"],
             "group_wait": f"{settings.alert_group_wait}s",
             "group_interval": f"{settings.alert_group_interval}s",
             "repeat_interval": f"{settings.alert_repeat_interval}s"}
    receivers = [{"name": receiver,
                  "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}]
    return json.dumps({"route": route, "receivers": receivers}, indent=2)


def render(settings: Settings, exporter_host: str) -> str:
    """The config for settings: their webhook, else the exporter's log on exporter_host."""
    if settings.alert_webhook_url:
        return alertmanager_config(settings.alert_webhook_url, WEBHOOK_RECEIVER, settings)
    return alertmanager_config(log_receiver_url(settings, exporter_host), LOG_RECEIVER, settings)


def stack_config(settings: Settings) -> str:
    """The local stack's config: the exporter on loopback unless a webhook is set."""
    return HEADER + render(settings, "127.0.0.1") + "\n"


def committed_config() -> str:
    """What prometheus/alertmanager.yml must hold: defaults, the compose exporter's log."""
    return HEADER + render(Settings(), COMPOSE_EXPORTER_HOST) + "\n"


def write_config(settings: Settings) -> Path:
    """Write the local stack's config into the data folder and return its path."""
    return rundir.write_generated(settings, "alertmanager.yml", stack_config(settings))


def write_committed() -> None:
    """Rewrite prometheus/alertmanager.yml."""
    COMMITTED.write_text(committed_config())
