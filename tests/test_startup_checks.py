"""Every process that reads settings refuses a bad one at startup, before serving anything.

Each command is started as a real process; it must exit non-zero within the
timeout and its stderr must name the offending variable. A process that
accepted the settings would start serving (or try to reach its servers) and
run into the timeout instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tally.stack.process import free_ports

COMMANDS = ("serve", "flush", "exporter", "migrate")
TIMEOUT = 20.0


def _start(command: str, **variables: str) -> tuple[int | None, str]:
    """Run `tally <command>` on free ports; (exit code or None if still running, stderr)."""
    redis_port, pg_port, influx_port, ingest_port, exporter_port = free_ports(5)
    env = os.environ | {
        "TALLY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TALLY_POSTGRES_DSN": f"postgresql://tally@127.0.0.1:{pg_port}/tally",
        "TALLY_INFLUX_URL": f"http://127.0.0.1:{influx_port}",
        "TALLY_INGEST_PORT": str(ingest_port), "TALLY_EXPORTER_PORT": str(exporter_port),
        "TALLY_INSECURE_NO_AUTH": "true", "TALLY_SINK_CONNECT_TIMEOUT": "2",
    } | variables
    proc = subprocess.Popen([sys.executable, "-m", "tally.stack.cli", command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, stderr
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # gunicorn's workers too
        _, stderr = proc.communicate()
        return None, stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_sink_stops_startup(command):
    code, stderr = _start(command, TALLY_SINKS="timescale,nosuch")
    assert code not in (None, 0), stderr[-2000:]
    assert "TALLY_SINKS names unknown sink 'nosuch'" in stderr
    assert stderr.startswith(f"tally {command}: ")  # one sentence, no traceback


@pytest.mark.parametrize("command", COMMANDS)
def test_misspelt_variable_stops_startup_naming_the_closest_setting(command):
    code, stderr = _start(command, TALLY_REDIS_ULR="redis://127.0.0.1:1/0")
    assert code not in (None, 0), stderr[-2000:]
    assert "TALLY_REDIS_ULR is not a setting; did you mean TALLY_REDIS_URL?" in stderr


def test_unknown_config_file_key_stops_startup(tmp_path):
    config = tmp_path / "tally.toml"
    config.write_text("redis_port = 7000\n[tally]\nshards = 4\n")
    code, stderr = _start("flush", TALLY_CONFIG=str(config))
    assert code not in (None, 0), stderr[-2000:]
    assert "redis_port" in stderr
