"""`tally systemd`: the units pass `systemd-analyze verify`, score low exposure, and the
services run under the same no-write-and-execute memory rule the units impose."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tally.settings import load_settings
from tally.stack import systemd
from tally.stack.process import await_ready, free_ports, stop
from tests.statsd_support import send_udp, wait_until
from tests.test_api_support import WRITE

TALLY = Path(sys.prefix) / "bin" / "tally"
UNITS = ("tally-ingest.service", "tally-flusher.service", "tally-exporter.service",
         "tally-statsd.service", "tally.target")
# Exposure as `systemd-analyze security` rates it: 0 (locked down) to 10 (unprotected);
# below 2 is the "OK" band.
MAX_EXPOSURE = 2.0
# Starts a command with the two process-wide rules systemd applies before ExecStart for
# MemoryDenyWriteExecute= and NoNewPrivileges=, through prctl (PR_SET_MDWE, refuse exec
# gain; PR_SET_NO_NEW_PRIVS); both survive execve and are inherited by every child.
RESTRICTED = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(65, 1, 0, 0, 0) == 0 and libc.prctl(38, 1, 0, 0, 0) == 0, ctypes.get_errno()
os.execv(sys.argv[1], sys.argv[1:])
"""


def systemd_analyze(*args: str) -> subprocess.CompletedProcess:
    """Run systemd-analyze offline; the finished process."""
    binary = shutil.which("systemd-analyze")
    assert binary, "systemd-analyze is missing: run scripts/bootstrap (package systemd)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def units(tmp_path) -> Path:
    """A folder with the units `tally systemd --output` writes for this venv."""
    out = subprocess.run([str(TALLY), "systemd", "--output", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / name) for name in UNITS]
    return tmp_path


def test_units_pass_systemd_analyze_verify(units):
    checked = systemd_analyze("verify", *(str(units / name) for name in UNITS))
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), \
        checked.stdout + checked.stderr


@pytest.mark.parametrize("name", UNITS[:4])
def test_units_have_low_exposure(units, name):
    rated = systemd_analyze("security", "--offline=yes", "--no-pager", str(units / name))
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", rated.stdout)
    assert score, rated.stdout + rated.stderr
    assert float(score[1]) < MAX_EXPOSURE, rated.stdout


def test_units_carry_the_hardening_and_the_env_file(units):
    ingest = (units / "tally-ingest.service").read_text()
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "Restart=on-failure", "CapabilityBoundingSet=", "MemoryDenyWriteExecute=yes",
                 "EnvironmentFile=/etc/tally/tally.env", f"ExecStart={TALLY} serve",
                 f"LimitNOFILE={systemd.open_files_needed(load_settings({}))}"):
        assert line in ingest.splitlines(), line
    assert "Wants=tally-ingest.service tally-flusher.service tally-exporter.service " \
           "tally-statsd.service" in (units / "tally.target").read_text()


def test_printed_units_name_each_file_keep_a_home_venv_readable_and_refuse_a_relative_tally():
    printed = subprocess.run([str(TALLY), "systemd", "--env-file", "/srv/tally.env"],
                             capture_output=True, text=True, timeout=60)
    assert [line for line in printed.stdout.splitlines() if line.startswith("# tally")] == \
        [f"# {name}" for name in UNITS]
    assert printed.stdout.count("EnvironmentFile=/srv/tally.env") == 4
    home = subprocess.run([str(TALLY), "systemd", "--tally", "/home/ops/venv/bin/tally"],
                          capture_output=True, text=True, timeout=60).stdout
    assert home.count("ProtectHome=read-only") == 4 and "ProtectHome=yes" not in home
    refused = subprocess.run([str(TALLY), "systemd", "--tally", "venv/bin/tally"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--tally must be an absolute path" in refused.stderr


def _restricted(command: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", RESTRICTED, str(TALLY), command], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.ConnectionError:
        return False


def test_the_restriction_refuses_writable_executable_memory():
    probe = ("import mmap\ntry:\n    mmap.mmap(-1, 4096, prot=7)\nexcept PermissionError:\n"
             "    print('refused')\n")
    out = subprocess.run([sys.executable, "-c", RESTRICTED, sys.executable, "-c", probe],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "refused\n", out.stdout + out.stderr


def test_services_run_without_writable_executable_memory(redis_url, redis_client, postgres_dsn,
                                                         influx_url, pg_conn, influx, tmp_path):
    ingest, exporter, statsd, statsd_metrics = free_ports(4)
    env = {"PATH": "/usr/bin:/bin", "TALLY_REDIS_URL": redis_url,
           "TALLY_POSTGRES_DSN": postgres_dsn, "TALLY_INFLUX_URL": influx_url,
           "TALLY_WRITE_TOKENS": WRITE, "TALLY_INGEST_PORT": str(ingest),
           "TALLY_INGEST_WORKERS": "1", "TALLY_EXPORTER_PORT": str(exporter),
           "TALLY_STATSD_PORT": str(statsd), "TALLY_STATSD_METRICS_PORT": str(statsd_metrics),
           "TALLY_STATSD_INTERVAL": "0.2", "TALLY_SERIES_HISTORY": "false"}
    procs = {name: _restricted(name, env, tmp_path / f"{name}.log")
             for name in ("serve", "exporter", "statsd")}
    try:
        for name, url in (("serve", f"http://127.0.0.1:{ingest}/readyz"),
                          ("exporter", f"http://127.0.0.1:{exporter}/metrics"),
                          ("statsd", f"http://127.0.0.1:{statsd_metrics}/metrics")):
            await_ready(procs[name], name, lambda u=url: _answers(u), tmp_path / f"{name}.log",
                        timeout=60)
        posted = requests.post(f"http://127.0.0.1:{ingest}/v1/events", timeout=10,
                               json=[{"counter": "views", "key": "video:1", "id": f"e{i}"}
                                     for i in range(3)],
                               headers={"Authorization": f"Bearer {WRITE}"})
        assert posted.json() == {"accepted": 3, "duplicates": 0}
        send_udp(statsd, b"app.signups:2|c")
        config = CountingConfig.from_settings(load_settings({}, redis_url=redis_url))
        wait_until(lambda: reads.total(redis_client, config, "app", "signups") == 2, 20)
        scraped = requests.get(f"http://127.0.0.1:{exporter}/metrics", timeout=10).text
        assert 'tally_events_total{counter="views"} 3.0' in scraped
        flushed = subprocess.run([sys.executable, "-c", RESTRICTED, str(TALLY), "flush",
                                  "--once"], env=env, capture_output=True, text=True, timeout=120)
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    finally:
        for proc in procs.values():
            stop(proc)
    rows = pg_conn.execute("SELECT counter, sum(value) FROM counts_1m GROUP BY 1 "
                           "ORDER BY 1").fetchall()
    assert rows == [("app", 2), ("views", 3)]
