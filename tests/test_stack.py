"""`tally up/down/status` run the real local stack on free ports in a throwaway folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import redis
import requests
import yaml

from tally.settings import PROJECT_ROOT, Settings, load_settings
from tally.stack import process
from tally.stack.prometheus_yml import stack_config
from tally.stack.runner import STACK, running_pid
from tally.stack.secrets import TOKENS_FILE, read_file


def tally(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run the `tally` command line with env and return its completed process."""
    return subprocess.run([sys.executable, "-m", "tally.stack.cli", *args], env=env, text=True,
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def influx_ports() -> tuple[int, int]:
    """A free port whose neighbour port + 2 (InfluxDB's RPC port) is free as well."""
    while True:
        port = process.free_ports(1)[0]
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port + 2)) != 0 and port + 2 < 65536:
                return port, port + 2


@pytest.fixture
def stack_env():
    """Environment for a stack on free ports in a temporary folder; brought down afterwards."""
    data = Path(tempfile.mkdtemp(prefix="tally-stack-"))
    data.chmod(0o711)  # PostgreSQL runs as the postgres user and must enter the folder
    names = ("REDIS", "POSTGRES", "PROMETHEUS", "ALERTMANAGER", "INGEST", "EXPORTER", "STATSD",
             "STATSD_METRICS", "SUPERVISOR")
    ports = {f"TALLY_{name}_PORT": str(port)
             for name, port in zip(names, process.free_ports(len(names)), strict=True)}
    env = dict(os.environ, **ports, TALLY_DATA_DIR=str(data / "data"),
               TALLY_INFLUX_PORT=str(influx_ports()[0]))
    yield env
    tally(env, "down")
    shutil.rmtree(data)


def test_help_lists_subcommands():
    out = tally(dict(os.environ), "--help").stdout
    for command in ("up", "down", "status", "migrate", "serve", "flush", "exporter",
                    "statsd"):
        assert f"    {command} " in out


def sourced(env: dict[str, str]) -> Settings:
    """Settings as after `. .tally/tokens.env`: the stack's generated credentials included."""
    data_dir = load_settings(env).data_dir
    return load_settings(env | read_file(data_dir / TOKENS_FILE))


def test_up_down_up_keeps_data_and_leaves_no_process(stack_env):
    started = tally(stack_env, "up", "--detach")
    assert started.returncode == 0
    settings = sourced(stack_env)
    assert f"live page: http://127.0.0.1:{settings.ingest_port}/" in started.stdout
    with redis.Redis.from_url(settings.redis_url) as client:
        client.set("kept", "yes")
    with psycopg.connect(settings.postgres_dsn) as conn:
        conn.execute("INSERT INTO counts_1d VALUES ('2026-11-28Z', 'views', 'a', 7, NULL)")
    pids = [running_pid(settings, name) for name in ("supervisor", *(e.name for e in STACK))]
    assert all(pids)
    assert "already running" in tally(stack_env, "up", "--detach").stdout
    assert tally(stack_env, "status").returncode == 0

    assert tally(stack_env, "down").returncode == 0
    assert not any(process.alive(*pid) for pid in pids)
    assert tally(stack_env, "status").returncode == 3

    assert tally(stack_env, "up", "--detach").returncode == 0
    with redis.Redis.from_url(settings.redis_url) as client:
        assert client.get("kept") == b"yes"
    with psycopg.connect(settings.postgres_dsn) as conn:
        assert conn.execute("SELECT value FROM counts_1d").fetchall() == [(7,)]


def test_up_refuses_a_port_taken_by_another_program(stack_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = dict(stack_env, TALLY_REDIS_PORT=str(busy.getsockname()[1]))
        done = tally(env, "up", "--detach")
    assert done.returncode == 1
    assert "is taken by another program" in done.stderr


def test_prometheus_config_gets_configured_ports_and_absolute_rule_paths():
    config = yaml.safe_load(stack_config(load_settings({}, exporter_port=19841,
                                                       ingest_port=18080)))
    assert config["rule_files"] == [str(PROJECT_ROOT / "prometheus" / "rules" / "*.yml")]
    assert [(job["job_name"], job["static_configs"]) for job in config["scrape_configs"]] == [
        ("tally-exporter", [{"targets": ["127.0.0.1:19841"]}]),
        ("tally-ingest", [{"targets": ["127.0.0.1:18080"]}]),
        ("tally-statsd", [{"targets": ["127.0.0.1:9842"]}]),
        ("tally-stack", [{"targets": ["127.0.0.1:9843"]}])]


def wait_for(probe, timeout: float = 30.0):
    """Poll probe() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
    return result


def test_readme_quickstart_counts_flushes_and_exports(stack_env):
    """The README's curl session: post twice with one id, read back, see the flushed row."""
    env = dict(stack_env, TALLY_FLUSH_INTERVAL="1")
    assert tally(env, "up", "--detach").returncode == 0
    settings = sourced(env)
    tokens = read_file(settings.data_dir / TOKENS_FILE)
    base = f"http://127.0.0.1:{settings.ingest_port}"
    event = {"counter": "views", "key": "video:42", "id": "evt-1", "user": "u-1"}
    posted = requests.post(f"{base}/v1/events", json=[event, event], timeout=10, headers={
        "Authorization": f"Bearer {tokens['TALLY_WRITE_TOKENS']}"})
    assert posted.json() == {"accepted": 1, "duplicates": 1}
    read = requests.get(f"{base}/v1/counters/views", params={"key": "video:42"}, timeout=10,
                        headers={"Authorization": f"Bearer {tokens['TALLY_READ_TOKENS']}"})
    assert read.json()["total"] == 1

    def flushed_row():
        with psycopg.connect(settings.postgres_dsn) as conn:
            return conn.execute("SELECT counter, key, value FROM counts_1m").fetchall()

    assert wait_for(flushed_row) == [("views", "video:42", 1)]
    metrics = requests.get(f"http://127.0.0.1:{settings.exporter_port}/metrics", timeout=10).text
    assert 'tally_events_total{counter="views"} 1.0' in metrics


def test_up_runs_alertmanager_and_its_alerts_reach_the_exporter_log(stack_env):
    """Prometheus (no lifecycle API) knows the stack's Alertmanager, which logs in the exporter."""
    env = dict(stack_env, TALLY_ALERT_GROUP_WAIT="1")
    settings = load_settings(env)
    assert tally(env, "up", "--detach").returncode == 0
    am = f"127.0.0.1:{settings.alertmanager_port}"

    def active_alertmanagers():
        answer = requests.get(f"http://127.0.0.1:{settings.prometheus_port}/api/v1/alertmanagers",
                              timeout=10).json()
        return [a["url"] for a in answer["data"]["activeAlertmanagers"]]

    assert wait_for(active_alertmanagers) == [f"http://{am}/api/v2/alerts"]
    quit_ = requests.post(f"http://127.0.0.1:{settings.prometheus_port}/-/quit", timeout=10)
    assert quit_.status_code == 403  # no lifecycle API
    alert = {"labels": {"alertname": "StackSmoke", "severity": "warning"},
             "annotations": {"summary": "posted by the stack test"}}
    requests.post(f"http://{am}/api/v2/alerts", json=[alert], timeout=10).raise_for_status()
    log = settings.data_dir / "log" / "exporter.log"

    def alert_lines():
        return [line for line in log.read_text().splitlines() if '"tally.alerts"' in line]

    [line] = wait_for(alert_lines, timeout=60)
    assert '"alert firing: StackSmoke"' in line and '"receiver": "tally-log"' in line
