"""`tally flush [--once]`: every sink flushed by its own thread, on its own interval and backoff.

With the event log on (TALLY_EVENT_LOG), the archiver (archive.py) is one
more such worker, named "events": same lock, lease, backoff and health hash.
A worker that finds its sink's lock held asks again when that lock would
run out (at most TALLY_FLUSH_LOCK_SECONDS), not a whole interval later, so
it takes over from a killed flusher within seconds.

Sinks are independent: each has a thread with its own Redis connection,
sink connection, lock, lease and health hash, so a sink that hangs or fails
(it backs off 1 s doubling to 60 s) never delays another, and its marks wait
in its own dirty sets. Every sink call is bounded by TALLY_SINK_*_TIMEOUT, so
a hung sink's thread fails its run and retries rather than waiting forever.
SIGTERM and SIGINT stop every thread after its current step. Logs are JSON
lines on stderr (tally.logs).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import redis

from tally import logs
from tally.errors import SinkError
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import archive, flush, lock, maintenance, metrics
from tally.ingest.flusher.sinks import build_sink
from tally.redis_connect import connect, disconnect

MAX_BACKOFF = 60.0
log = logging.getLogger("tally.ingest.flusher")


def checkpoint_from_settings(settings):
    """Test hook: pause settings.flush_pause_seconds at the points in settings.flush_pause_at."""
    points, seconds = set(settings.flush_pause_at), settings.flush_pause_seconds

    def checkpoint(point: str) -> None:
        if point in points or "*" in points:
            log.info("paused", extra={"fields": {"point": point}})
            time.sleep(seconds)

    return checkpoint


class SinkLoop:
    """Flush state of one sink: when it may run next and how many failures in a row.

    `run` is one run of the worker: flush.flush_sink for a sink,
    archive.archive_run for the archiver.
    """

    def __init__(self, sink, run=flush.flush_sink):
        self.sink, self.run, self.failures, self.next_run = sink, run, 0, 0.0
        self.busy_for: float | None = None  # another flusher's lock runs out in this many s

    def step(self, client, config, settings, checkpoint) -> bool:
        """One run with metrics; True on success, schedules a backoff on failure."""
        started, skipped_before = time.time(), self.sink.skipped_total
        error, result = None, flush.RunResult(0, 0, 0)
        try:
            result = self.run(client, config, self.sink, settings, checkpoint)
        except (SinkError, lock.LockLost, redis.RedisError) as exc:
            error = str(exc) or type(exc).__name__
        self.failures = self.failures + 1 if error else 0
        backoff = min(MAX_BACKOFF, 2.0 ** (self.failures - 1)) if error else 0.0
        self.next_run = time.monotonic() + backoff
        self.busy_for = result.retry_in if result.elsewhere else None
        if result.elsewhere:  # the lock holder reports this sink's health, not us
            log.debug("sink busy", extra={"fields": {"sink": self.sink.name}})
            return True
        fields = {"sink": self.sink.name, "marks": result.marks, "rows": result.rows,
                  "recovered": result.recovered, "seconds": round(time.time() - started, 3)}
        try:
            metrics.record(client, self.sink.name, now=time.time(),
                           duration=time.time() - started, rows=result.rows, error=error,
                           skipped=self.sink.skipped_total - skipped_before)
        except redis.RedisError as exc:
            error = error or str(exc)
        if error:
            log.error("flush failed", extra={"fields": fields | {"error": error,
                                                                  "retry_in": backoff}})
        else:
            log.info("flushed", extra={"fields": fields})
        return error is None


def run_maintenance(settings, steps=()) -> None:
    """Retention step, then the given steps (the batch layer's sealing: `tally flush` passes it
    in, the flusher does not import the layer above); failures are logged, retried next time."""
    try:
        dropped = maintenance.run_retention(
            settings.postgres_dsn, settings.sink_connect_timeout, settings.sink_write_timeout,
            events_days=settings.events_retention if settings.event_log else None)
        log.info("retention", extra={"fields": {"dropped_chunks": dropped}})
    except SinkError as exc:
        log.error("retention failed", extra={"fields": {"error": str(exc)}})
    for step in steps:
        step(settings)


class SinkWorker:
    """One sink's thread: its own Redis client, sink connection, loop and retention runs."""

    def __init__(self, name: str, settings, checkpoint, stop: threading.Event, once: bool,
                 maintenance=()):
        self.name, self.settings, self.checkpoint = name, settings, checkpoint
        self.maintenance = tuple(maintenance)
        self.stop, self.once = stop, once
        # Configuration errors surface here.
        self.loop = (SinkLoop(archive.EventArchiver.from_settings(settings), archive.archive_run)
                     if name == archive.NAME else SinkLoop(build_sink(name, settings)))
        # Generous timeout: one round reads and writes tens of thousands of buckets.
        self.client = connect(settings, timeout=60.0)
        # The archiver runs at least every second: a busy shard's log reaches its
        # bound (TALLY_EVENT_LOG_MAX) long before a 10 s interval would drain it.
        self.interval = (min(settings.flush_interval, archive.INTERVAL)
                         if name == archive.NAME else settings.flush_interval)
        self.ok = True  # every run succeeded (what --once reports)
        self.crashed = False
        self.thread = threading.Thread(target=self.run, name=f"flush-{name}", daemon=True)

    def run(self) -> None:
        """Thread body: flush until stopped; an unexpected error stops the whole process."""
        try:
            self._loop()
        except Exception:  # a bug: end the process (and let its supervisor restart it)
            log.exception("flusher thread crashed", extra={"fields": {"sink": self.name}})
            self.ok, self.crashed = False, True
            self.stop.set()

    def _loop(self) -> None:
        settings, loop, client = self.settings, self.loop, self.client
        config = CountingConfig.from_settings(settings)
        next_maintenance = 0.0
        try:
            while not self.stop.is_set():
                if self.name == maintenance_worker(settings) and \
                        time.monotonic() >= next_maintenance:
                    run_maintenance(settings, self.maintenance)
                    next_maintenance = time.monotonic() + settings.flush_maintenance_interval
                self.ok = loop.step(client, config, settings, self.checkpoint) and self.ok
                if self.once:
                    break
                wait = self.interval if not loop.failures else loop.next_run - time.monotonic()
                if loop.busy_for is not None:  # ask again as the holder's lock runs out:
                    wait = min(wait, loop.busy_for + 0.1)  # a killed holder's passes on
                self.stop.wait(max(0.05, wait))
        finally:
            loop.sink.close()
            disconnect(client)


def worker_names(settings) -> list[str]:
    """The flusher's workers: one per sink, and the archiver when the event log is on."""
    return [*settings.sinks, *([archive.NAME] if settings.event_log else [])]


def maintenance_worker(settings) -> str | None:
    """The worker that runs TimescaleDB retention: the TimescaleDB sink's, else the archiver's."""
    return next((name for name in ("timescale", archive.NAME) if name in worker_names(settings)),
                None)


def main(args, settings, maintenance=()) -> int:
    """Entry point of `tally flush` (through tally.ingest.batch.seal, which adds sealing)."""
    logs.setup()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    checkpoint = checkpoint_from_settings(settings)
    workers = [SinkWorker(name, settings, checkpoint, stop, args.once, maintenance)
               for name in worker_names(settings)]
    for worker in workers:
        worker.thread.start()
    for worker in workers:
        while worker.thread.is_alive():
            worker.thread.join(0.2)  # in short waits, so the main thread takes signals
    ok = all(worker.ok for worker in workers)
    log.info("stopped", extra={"fields": {"ok": ok}})
    if any(worker.crashed for worker in workers):
        return 1
    return 0 if ok or not args.once else 1
