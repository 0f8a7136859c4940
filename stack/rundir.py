"""Where the local stack keeps its pid files and logs under <data_dir>, and how it reads them.

A pid file holds the pid and the process start time, so a reused pid is
never mistaken for a stack process. The runner, the supervisor and `tally
logs` all find processes and their output through these functions.
"""

from __future__ import annotations

from pathlib import Path

from tally.settings import Settings
from tally.stack import process

SUPERVISOR = "supervisor"  # the name of the supervisor's own pid file and log


def pid_file(settings: Settings, name: str) -> Path:
    """Where the pid (and start time) of a stack process is recorded."""
    return settings.data_dir / "run" / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    """Where a stack process writes its output."""
    return settings.data_dir / "log" / f"{name}.log"


def running_pid(settings: Settings, name: str) -> tuple[int, int] | None:
    """Return (pid, start time) of a live recorded process; forget stale pid files."""
    path = pid_file(settings, name)
    try:
        pid, started = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return None
    if process.alive(pid, started):
        return pid, started
    path.unlink(missing_ok=True)
    return None


def record(settings: Settings, name: str, pid: int) -> None:
    """Write the pid file of a process that was just started."""
    path = pid_file(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {process.start_time(pid)}\n")


def forget(settings: Settings, name: str) -> None:
    """Remove the pid file of a process that has stopped."""
    pid_file(settings, name).unlink(missing_ok=True)


def write_generated(settings: Settings, name: str, text: str) -> Path:
    """Write a config the stack generates at each start (prometheus.yml, alertmanager.yml)."""
    target = settings.data_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target
