"""The loop that owns the stack's processes: it starts them, restarts a crashed one, stops them all.

A process that exits unexpectedly is restarted after a capped exponential
backoff (0.5 s doubling up to 30 s, back to 0.5 s once a process has stayed
up for 60 s), and every restart is printed and counted. A process that keeps
failing (more than 5 restarts within 60 s) would only flap and fill its log,
so the supervisor stops the whole stack instead and returns 1. The entries
are whatever the runner's STACK lists: nothing here knows a process by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tally.errors import ServiceError
from tally.settings import Settings
from tally.stack import process, rundir, services
from tally.stack.supervisor_metrics import serve_metrics

FIRST_DELAY = 0.5  # seconds before the first restart of a process
MAX_DELAY = 30.0  # the backoff doubles up to this
STABLE_SECONDS = 60.0  # up this long, a process starts again from FIRST_DELAY
MAX_RESTARTS = 5  # restarts allowed within WINDOW_SECONDS; one more stops the stack
WINDOW_SECONDS = 60.0
POLL_SECONDS = 0.2  # how often exits are looked for
READY_TIMEOUT = 60.0  # seconds a (re)started process has to answer its readiness probe


class GaveUp(ServiceError):
    """A process failed again right after MAX_RESTARTS restarts: the stack stops."""


@dataclass
class Child:
    """One supervised process: its entry, its current process and its restart history."""

    entry: object  # a runner Entry: name, build, before_start, after_start, finite, listens
    service: services.Service
    proc: object = None  # subprocess.Popen while it runs
    up: bool = False  # started and answering its readiness probe
    ready_at: float | None = None
    exited_at: float = 0.0
    delay: float = FIRST_DELAY
    restarts: int = 0
    recent: deque = field(default_factory=deque)  # times of the restarts within the window
    due: float | None = None  # when a scheduled restart is due
    finished: bool = False  # a finite entry that ended with exit code 0

    @property
    def name(self) -> str:
        """The entry's name: its log, pid file and metric label."""
        return self.entry.name


class Supervisor:
    """Start the entries in order, watch them, restart what crashes, stop all newest first."""

    def __init__(self, settings: Settings, entries: Iterable, *,
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.entries = tuple(entries)
        self.children: list[Child] = []
        self.say = say
        self.clock = clock
        self._metrics = None

    def start_all(self) -> None:
        """Serve the metrics, then start and await each entry in order (raises on a failure)."""
        self._metrics = serve_metrics(self.settings.supervisor_port, self.children)
        for entry in self.entries:
            child = Child(entry, entry.build(self.settings))
            self._refuse_taken_port(child)
            self.children.append(child)
            self._launch(child)
            self.say(f"{child.name:<11} started (pid {child.proc.pid})  {child.service.url}")

    def run(self) -> int:
        """Watch until Ctrl-C or SIGTERM (0) or a process that keeps failing (1)."""
        try:
            while True:
                for child in self.children:
                    self._tend(child)
                time.sleep(POLL_SECONDS)
        except GaveUp as exc:
            self.say(str(exc))
            return 1
        except KeyboardInterrupt:
            self.say("stopping")
            return 0

    def stop_all(self) -> None:
        """Stop every started process, newest first, and the metrics server."""
        for child in reversed(self.children):
            if child.proc is not None:
                process.stop(child.proc, child.service.stop_signal)
                child.up = False
            rundir.forget(self.settings, child.name)
        if self._metrics:
            self._metrics.shutdown()
            self._metrics.server_close()
            self._metrics = None

    def _refuse_taken_port(self, child: Child) -> None:
        port = urlsplit(child.service.url).port if child.entry.listens else None
        if port and process.port_in_use(port):
            raise ServiceError(f"port {port} for {child.name} is taken by another program; "
                               f"choose another with TALLY_{child.name.upper()}_PORT")

    def _launch(self, child: Child) -> None:
        """Prepare, spawn, record and await one process, then run its after_start hook.

        The hooks (migrations, InfluxDB setup) are idempotent, so they run after a
        restart too: a server that lost its state gets it back. The Popen is kept
        before the await, so an interrupt during the wait still stops the process.
        """
        entry, service = child.entry, child.service
        log = rundir.log_file(self.settings, child.name)
        child.ready_at = None
        if entry.before_start:
            entry.before_start(self.settings)
        service.prepare()
        child.proc = process.spawn(list(service.argv), log, user=service.user, env=service.env)
        rundir.record(self.settings, child.name, child.proc.pid)
        process.await_ready(child.proc, child.name, service.ready, log, READY_TIMEOUT)
        if entry.after_start:
            entry.after_start(self.settings, service)
        child.ready_at = self.clock()
        child.up = True

    def _tend(self, child: Child) -> None:
        """Notice an exit of one process, or restart it when its backoff is over."""
        if child.proc is not None and child.proc.poll() is not None:
            code = child.proc.returncode
            if child.entry.finite and code == 0:
                child.finished, child.up, child.proc = True, False, None
                rundir.forget(self.settings, child.name)
            else:
                self._exited(child, f"exited with {code}")
        elif child.due is not None and self.clock() >= child.due:
            child.due = None
            self._restart(child)

    def _restart(self, child: Child) -> None:
        try:
            self._launch(child)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to come back is one more exit
            if child.proc is not None:
                process.stop(child.proc, signal.SIGKILL)
            self._exited(child, f"failed to restart ({str(exc).splitlines()[0]})")
            return
        took = child.ready_at - child.exited_at
        self.say(f"{child.name} restarted (pid {child.proc.pid}), answering {took:.1f} s "
                 "after it exited")

    def _exited(self, child: Child, why: str) -> None:
        """Schedule the restart of a process that ended, or give up on it."""
        now = self.clock()
        _kill_leftovers(child.proc)
        child.proc, child.up, child.exited_at = None, False, now
        rundir.forget(self.settings, child.name)
        if child.ready_at is not None and now - child.ready_at >= STABLE_SECONDS:
            child.delay = FIRST_DELAY
        while child.recent and now - child.recent[0] > WINDOW_SECONDS:
            child.recent.popleft()
        if len(child.recent) >= MAX_RESTARTS:
            log = rundir.log_file(self.settings, child.name)
            raise GaveUp(f"{child.name} {why} after {MAX_RESTARTS} restarts within "
                         f"{WINDOW_SECONDS:.0f} s; stopping the stack (its log: {log})")
        child.recent.append(now)
        child.restarts += 1
        child.due = now + child.delay
        self.say(f"{child.name} {why}; restarting in {child.delay:g} s "
                 f"(restart {child.restarts})")
        child.delay = min(child.delay * 2, MAX_DELAY)


def _kill_leftovers(proc) -> None:
    """SIGKILL what is left of a crashed process's group (its session, started for it alone).

    A killed gunicorn master leaves its workers holding the port, a killed
    postmaster leaves backends attached to its shared memory; either would
    stop the restarted process from starting.
    """
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
