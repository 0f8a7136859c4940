"""Print the stack's log files line by line, each line prefixed by its process, like foreman.

The processes write to their own files under <data_dir>/log (which stay the
record, also after a restart or with `--detach`); the foreground `tally up`
and `tally logs -f` follow those files rather than the processes' pipes:

    redis       | 1234:M 04 Dec 2026 18:10:01.000 * Ready to accept connections tcp
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from pathlib import Path

POLL_SECONDS = 0.2


def prefix(name: str, width: int) -> str:
    """The column a process's lines start with."""
    return f"{name:<{width}} | "


class LogTail:
    """Follow a set of files from their current ends and print each new whole line prefixed."""

    def __init__(self, paths: Mapping[str, Path], out=None, prefixed: bool = True):
        self.paths = dict(paths)
        self.out = out or sys.stdout
        self.prefixed = prefixed  # False: one file's lines as they are
        self.width = max(map(len, self.paths), default=0)
        self.offsets = {name: _size(path) for name, path in self.paths.items()}
        self.partial = {name: b"" for name in self.paths}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Print the whole lines written to any file since the last poll."""
        for name, path in self.paths.items():
            size = _size(path)
            if size < self.offsets[name]:  # truncated or replaced: start over
                self.offsets[name], self.partial[name] = 0, b""
            if size == self.offsets[name]:
                continue
            with open(path, "rb") as file:
                file.seek(self.offsets[name])
                data = self.partial[name] + file.read(size - self.offsets[name])
            self.offsets[name] = size
            *lines, self.partial[name] = data.split(b"\n")
            start = prefix(name, self.width) if self.prefixed else ""
            for line in lines:
                self.out.write(start + line.decode(errors="replace").rstrip("\r") + "\n")
            self.out.flush()

    def start(self) -> LogTail:
        """Follow the files in a daemon thread until stop()."""
        self._thread = threading.Thread(target=self._follow, name="logtail", daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until stop() (from another thread) or an interrupt."""
        while not self._stop.wait(1.0):
            pass

    def stop(self) -> None:
        """Print what is left and end the thread."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.poll()

    def _follow(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()


def last_lines(path: Path, count: int) -> list[str]:
    """The last count lines of a file ([] when it does not exist)."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as file:
            # Enough for count lines of a few kB each, without reading a large log whole.
            file.seek(max(0, _size(path) - count * 4096))
            lines = file.read().splitlines()
    except OSError:
        return []
    return [line.decode(errors="replace") for line in lines[-count:]]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
