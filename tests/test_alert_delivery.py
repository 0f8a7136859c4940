"""A real Tally rule fires in a real Prometheus; a real Alertmanager delivers it to a receiver."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from tally.errors import ConfigError
from tally.settings import PROJECT_ROOT, load_settings
from tally.stack import alertmanager, services
from tally.stack.process import free_ports

RULES = PROJECT_ROOT / "prometheus" / "rules" / "tally.yml"
DEADLINE = 90  # seconds from the stack's start to the notification, on a busy machine


def quick_rule(name: str, folder: Path) -> Path:
    """A rule file holding Tally's alert `name` as committed, but firing at once (for: 0s)."""
    rule = next(rule for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"] if rule.get("alert") == name)
    path = folder / "quick.yml"
    quick = {"name": "quick", "rules": [rule | {"for": "0s"}]}
    path.write_text(yaml.safe_dump({"groups": [quick]}))
    return path


def committed_annotations(name: str) -> dict[str, str]:
    """The alert's annotations as the rule file has them (templates unexpanded)."""
    return next(rule["annotations"] for group in yaml.safe_load(RULES.read_text())["groups"]
                for rule in group["rules"] if rule.get("alert") == name)


def seconds_since(stamp: str, now: float) -> float:
    """now minus an RFC 3339 time with up to nanoseconds, as Alertmanager writes them."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    started = datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")
    return now - started.timestamp()


def exporter_process(redis_url: str, port: int) -> services.Service:
    """`tally exporter` on port, reading redis_url, with no other TALLY_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env |= {"TALLY_REDIS_URL": redis_url, "TALLY_EXPORTER_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    return services.tally("exporter", ["exporter"], url, services.http_ok(url + "/metrics"), env)


def test_a_firing_rule_reaches_the_webhook_and_so_does_its_resolution(webhook, alerting,
                                                                       tmp_path):
    dead = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens: up == 0
    alerting(webhook.url, quick_rule("TallyExporterDown", tmp_path), {"tally-exporter": [dead]})
    arrived, note = webhook.next(timeout=DEADLINE)
    assert (note["status"], note["receiver"], note["groupLabels"]) == (
        "firing", "test", {"alertname": "TallyExporterDown"})
    [alert] = note["alerts"]
    assert alert["labels"] == {"alertname": "TallyExporterDown", "severity": "critical",
                               "job": "tally-exporter", "instance": dead}
    expected = committed_annotations("TallyExporterDown")
    assert alert["annotations"] == expected | {
        "summary": f"Tally exporter {dead} cannot be scraped"}
    delay = seconds_since(alert["startsAt"], arrived)
    print(f"rule true -> webhook: {delay:.2f} s")  # reported with pytest -s
    assert 0 <= delay < DEADLINE
    with metrics_target(int(dead.rpartition(":")[2])):  # the target answers: up == 1
        _, note = webhook.next(timeout=DEADLINE)
    assert (note["status"], note["alerts"][0]["labels"]["instance"]) == ("resolved", dead)


@contextmanager
def metrics_target(port: int) -> Iterator[None]:
    """A real HTTP server on port answering every GET with one sample, while the block runs."""
    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = b"tally_up 1\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:  # noqa: A002
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", port), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_without_a_webhook_the_exporter_logs_each_alert(alerting, redis_url, redis_client,
                                                        tmp_path):
    port = free_ports(1)[0]
    settings = load_settings({}, redis_url=redis_url, exporter_port=port)
    exporter = exporter_process(redis_url, port)
    log = tmp_path / "exporter.log"
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    with services.running(exporter, log):
        alerting(alertmanager.log_receiver_url(settings, "127.0.0.1"),
                 quick_rule("TallyIngestDown", tmp_path), {"tally-ingest": [dead]})
        line = wait_for_alert_line(log, DEADLINE)
    assert (line["level"], line["logger"], line["message"]) == (
        "warning", "tally.alerts", "alert firing: TallyIngestDown")
    assert line["labels"] == {"alertname": "TallyIngestDown", "severity": "critical",
                              "job": "tally-ingest", "instance": dead}
    assert line["annotations"]["summary"] == f"Tally ingest {dead} cannot be scraped"
    assert line["annotations"]["runbook_url"] == "docs/observability.md#tallyingestdown"
    assert line["receiver"] == "test"


def wait_for_alert_line(log: Path, timeout: float) -> dict:
    """The first tally.alerts line the exporter writes to log, waiting up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for text in log.read_text().splitlines():
            if text.startswith("{") and json.loads(text)["logger"] == "tally.alerts":
                return json.loads(text)
        time.sleep(0.5)
    raise AssertionError(f"no tally.alerts line in {log} within {timeout} s:\n{log.read_text()}")


def test_the_logging_receiver_refuses_what_is_not_a_notification(redis_url, redis_client,
                                                                  tmp_path):
    exporter = exporter_process(redis_url, free_ports(1)[0])
    url = exporter.url
    with services.running(exporter, tmp_path / "exporter.log"):
        assert requests.get(f"{url}/alerts", timeout=10).status_code == 405
        bad = requests.post(f"{url}/alerts", data=b'{"alerts": 3}', timeout=10)
        assert bad.status_code == 400 and "list of alerts" in bad.text
        assert requests.post(f"{url}/alerts", json={"alerts": []}, timeout=10).text == \
            "logged 0 alerts\n"
    lines = [json.loads(text) for text in (tmp_path / "exporter.log").read_text().splitlines()]
    assert [line["message"] for line in lines if line["level"] == "error"] == [
        "alert notification unreadable"]


def test_a_resolved_alert_is_logged_at_info(redis_url, redis_client, tmp_path):
    exporter = exporter_process(redis_url, free_ports(1)[0])
    resolved = {"status": "resolved", "labels": {"alertname": "TallyFlushStale", "sink": "influx"},
                "annotations": {"summary": "s"}, "startsAt": "2026-12-04T18:00:00Z"}
    with services.running(exporter, tmp_path / "exporter.log"):
        answer = requests.post(f"{exporter.url}/alerts", timeout=10, json={
            "receiver": "tally-log", "status": "resolved", "alerts": [resolved, resolved]})
        assert answer.text == "logged 2 alerts\n"
    lines = [json.loads(text) for text in (tmp_path / "exporter.log").read_text().splitlines()]
    alerts = [line for line in lines if line["logger"] == "tally.alerts"]
    assert [(a["level"], a["message"], a["labels"]["sink"]) for a in alerts] == [
        ("info", "alert resolved: TallyFlushStale", "influx")] * 2


def test_committed_config_is_what_the_generator_writes():
    """prometheus/alertmanager.yml is output: rerun `python -m tally.stack.prometheus_yml`."""
    assert alertmanager.COMMITTED.read_text() == alertmanager.committed_config()


@pytest.mark.parametrize("settings", [
    load_settings({}),
    load_settings({}, alert_webhook_url="https://hooks.example.com/tally?x=1"),
])
def test_amtool_accepts_the_stack_config(settings, tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager.stack_config(settings))
    done = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    [hook] = yaml.safe_load(path.read_text())["receivers"][0]["webhook_configs"]
    assert hook["url"] == (settings.alert_webhook_url or "http://127.0.0.1:9841/alerts")


def test_amtool_accepts_the_committed_config():
    done = subprocess.run(["amtool", "check-config", str(alertmanager.COMMITTED)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name, value, message", [
    ("alert_webhook_url", "hooks.example.com", "TALLY_ALERT_WEBHOOK_URL must be an http://"),
    ("alert_group_wait", 0, "TALLY_ALERT_GROUP_WAIT must be greater than 0"),
    ("alertmanager_port", 70000, "TALLY_ALERTMANAGER_PORT must be a port between 1 and 65535"),
])
def test_bad_alert_settings_are_refused_by_name(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({}, **{name: value})
