"""Progress of a long batch command on stderr: a bar redrawn in place on a terminal,
one plain line per step otherwise (logs and pipes keep every line)."""

from __future__ import annotations

import sys
import time

WIDTH = 30  # characters of the bar


class Progress:
    """Reports `done` of `total` units with a note; a bar on a TTY, else plain lines."""

    def __init__(self, what: str, total: int, stream=None):
        self.what, self.total = what, max(total, 0)
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self.began = time.monotonic()

    def update(self, done: int, note: str = "") -> None:
        """Show `done` units finished, with a note (e.g. the day, events/s)."""
        if not self.tty:
            print(f"{self.what}: {done}/{self.total} {note}".rstrip(), file=self.stream,
                  flush=True)
            return
        share = done / self.total if self.total else 1.0
        bar = "#" * round(share * WIDTH)
        self.stream.write(f"\r{self.what} [{bar:<{WIDTH}}] {done}/{self.total} {note}\x1b[K")
        self.stream.flush()

    def finish(self, summary: str) -> None:
        """End the bar's line and print a summary line."""
        if self.tty:
            self.stream.write("\n")
        print(summary, file=self.stream, flush=True)

    def rate(self, count: int) -> float:
        """`count` per second since the start."""
        return count / max(time.monotonic() - self.began, 1e-9)
