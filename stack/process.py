"""Start, await and stop server processes; shared by `tally up`, the test fixtures and bench/run.

Processes start in their own session with output to a log file, so `tally up
--detach` can return while they keep running and a terminal's Ctrl-C reaches
only the runner, which then stops them in order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tally.errors import ServiceError


def free_ports(count: int) -> list[int]:
    """Return count distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_in_use(port: int) -> bool:
    """Tell whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of a log file, or '' when it does not exist."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def spawn(argv: list[str], log_path: Path, *, user: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start argv in a new session, stdout and stderr appended to log_path.

    The log (0600) and whatever the process creates (umask 077: Redis' AOF,
    InfluxDB's files) are readable by their owner alone.
    """
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as log:
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, user=user, group=user, extra_groups=[] if user else None,
                env=env, umask=0o077,
            )
        except FileNotFoundError:
            raise ServiceError(
                f"{argv[0]} is not installed; run `bash scripts/bootstrap` first"
            ) from None


def await_ready(proc: subprocess.Popen, name: str, ready: Callable[[], bool],
                log_path: Path, timeout: float = 60.0) -> None:
    """Poll ready() until it returns True; raise ServiceError if the process exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {proc.returncode}; log {log_path}:\n{tail(log_path)}"
            )
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            pass
        time.sleep(0.05)
    stop(proc)
    raise ServiceError(f"{name} did not answer within {timeout:.0f}s; log {log_path}:\n"
                       f"{tail(log_path)}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Signal a child, wait for it to exit, kill it after timeout."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_time(pid: int) -> int | None:
    """Return a live process's start time in clock ticks, None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(pid: int, started: int) -> bool:
    """Tell whether the process pid, started at `started`, still runs (not a reused pid)."""
    return start_time(pid) == started


def stop_pid(pid: int, started: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Signal a process that is not our child and wait until it has gone."""
    if not alive(pid, started):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid, started):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)
