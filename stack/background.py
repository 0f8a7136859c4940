"""The supervisor of `tally up --detach`, run as its own process in its own session.

`tally up --detach` starts `python -m tally.stack.background --ready-fd N`
with its stdout and stderr: the startup lines (and a startup error) reach the
caller as they would in the foreground. Once every process answers, this
process moves its output to <data_dir>/log/supervisor.log, writes "ready" to
fd N and supervises until `tally down` sends SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

from tally.errors import TallyError
from tally.settings import Settings, load_settings
from tally.stack.rundir import SUPERVISOR, log_file
from tally.stack.runner import run_stack


def detach(settings: Settings, ready_fd: int) -> None:
    """Send our output to the supervisor's log, then tell the caller the stack is up."""
    path = log_file(settings, SUPERVISOR)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # private, as every log
    os.fchmod(fd, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    os.write(ready_fd, b"ready")
    os.close(ready_fd)


def main(argv: list[str] | None = None) -> int:
    """Run the stack until SIGTERM; exit 1 with a message if it cannot start."""
    parser = argparse.ArgumentParser(prog="tally up --detach")
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return run_stack(settings, args.demo, lambda: detach(settings, args.ready_fd))
    except TallyError as exc:
        print(f"tally up: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
