"""Every Tally process logs the same JSON line shape (tally.logs): each is started and read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from tally.logs import BASE_KEYS
from tally.stack import services
from tally.stack.process import free_ports
from tests.test_api_support import W, gunicorn

LEVELS = {"debug", "info", "warning", "error", "critical"}


def json_lines(text: str) -> list[dict]:
    """Every line of a process's stderr as JSON; fails on a line in any other format."""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "the process logged nothing"
    return lines


def assert_shape(lines: list[dict]) -> None:
    """Each line opens with the base keys, in order, and names a known level."""
    for line in lines:
        assert tuple(line)[:len(BASE_KEYS)] == BASE_KEYS, line
        assert line["level"] in LEVELS and isinstance(line["ts"], float), line


def tally_env(**settings) -> dict[str, str]:
    """This environment without TALLY_* variables, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    return env | {f"TALLY_{k.upper()}": str(v) for k, v in settings.items()}


def test_serve_logs_gunicorn_and_access_lines_as_json(redis_url, redis_client, tmp_path):
    with gunicorn(redis_url, 1, tmp_path) as (base, _):
        requests.post(f"{base}/v1/events", json={"counter": "v", "key": "k"}, headers=W,
                      timeout=10).raise_for_status()
    lines = json_lines(next(tmp_path.glob("serve-*.log")).read_text())
    assert_shape(lines)
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "tally.ingest.access"} <= loggers
    posted = [line for line in lines if line.get("route") == "/v1/events"]
    assert [(line["logger"], line["message"], line["status"]) for line in posted] == [
        ("tally.ingest.access", "POST /v1/events 200", 200)]


def test_flush_logs_json(redis_url, redis_client, postgres_dsn, influx):
    env = tally_env(redis_url=redis_url, postgres_dsn=postgres_dsn, influx_url=influx)
    done = subprocess.run([sys.executable, "-m", "tally.stack.cli", "flush", "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    assert_shape(lines)
    flushed = [line for line in lines if line["message"] == "flushed"]
    assert {line["sink"] for line in flushed} == {"timescale", "influx", "events"}  # + archiver
    assert lines[-1]["message"] == "stopped" and lines[-1]["ok"] is True


def test_exporter_logs_json(redis_url, redis_client, tmp_path: Path):
    port = free_ports(1)[0]
    env = tally_env(redis_url=redis_url, exporter_port=port)
    url = f"http://127.0.0.1:{port}"
    service = services.tally("exporter", ["exporter"], url, services.http_ok(url + "/metrics"),
                             env)
    with services.running(service, tmp_path / "exporter.log"):
        requests.get(url + "/metrics", timeout=10).raise_for_status()
    lines = json_lines((tmp_path / "exporter.log").read_text())
    assert_shape(lines)
    assert lines[0]["message"] == f"exporter serving {url}/metrics"
