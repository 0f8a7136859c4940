"""`tally flush [--once]`: flush every sink on an interval, each with its own retry backoff.

Sinks are independent: a failing sink backs off (1 s doubling to 60 s) while
the others keep flushing, and its marks wait in its own dirty sets. SIGTERM
and SIGINT stop the loop after the current step. Logs are JSON lines on
stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

import redis

from ingest.counting.config import CountingConfig
from tally.errors import SinkError
from tally.flusher import flush, handoff, lock, maintenance, metrics
from tally.flusher.sink import build_sink
from tally.redis_connect import connect, disconnect

MAX_BACKOFF = 60.0
log = logging.getLogger("tally.flusher")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": round(record.created, 3), "level": record.levelname,
                "logger": record.name, "msg": record.getMessage()}
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging() -> None:
    """Send JSON log lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def checkpoint_from_env(environ=os.environ):
    """Test hook: pause TALLY_FLUSH_PAUSE_SECONDS at points named in TALLY_FLUSH_PAUSE_AT."""
    points = {p.strip() for p in environ.get("TALLY_FLUSH_PAUSE_AT", "").split(",") if p.strip()}
    seconds = float(environ.get("TALLY_FLUSH_PAUSE_SECONDS", "1"))

    def checkpoint(point: str) -> None:
        if point in points or "*" in points:
            log.info("paused", extra={"fields": {"point": point}})
            time.sleep(seconds)

    return checkpoint


class SinkLoop:
    """Flush state of one sink: when it may run next and how many failures in a row."""

    def __init__(self, sink):
        self.sink, self.failures, self.next_run = sink, 0, 0.0

    def step(self, client, config, settings, checkpoint) -> bool:
        """One run with metrics; True on success, schedules a backoff on failure."""
        started, skipped_before = time.time(), self.sink.skipped_total
        error, result = None, flush.RunResult(0, 0, 0)
        try:
            result = flush.flush_sink(client, config, self.sink, settings, checkpoint)
        except (SinkError, lock.LockLost, redis.RedisError) as exc:
            error = str(exc) or type(exc).__name__
        self.failures = self.failures + 1 if error else 0
        backoff = min(MAX_BACKOFF, 2.0 ** (self.failures - 1)) if error else 0.0
        self.next_run = time.monotonic() + backoff
        fields = {"sink": self.sink.name, "marks": result.marks, "rows": result.rows,
                  "recovered": result.recovered, "seconds": round(time.time() - started, 3)}
        try:
            shards = handoff.discover(client, config.shards)
            lag = metrics.lag_seconds(client, shards, self.sink.name, time.time())
            metrics.record(client, self.sink.name, now=time.time(),
                           duration=time.time() - started, rows=result.rows, lag=lag, error=error,
                           skipped=self.sink.skipped_total - skipped_before)
            fields["lag_seconds"] = round(lag, 3)
        except redis.RedisError as exc:
            error = error or str(exc)
        if error:
            log.error("flush failed", extra={"fields": fields | {"error": error,
                                                                  "retry_in": backoff}})
        else:
            log.info("flushed", extra={"fields": fields})
        return error is None


def run_maintenance(settings) -> None:
    """Retention step; failures are logged and retried at the next interval."""
    try:
        dropped = maintenance.run_retention(settings.postgres_dsn)
        log.info("retention", extra={"fields": {"dropped_chunks": dropped}})
    except SinkError as exc:
        log.error("retention failed", extra={"fields": {"error": str(exc)}})


def main(args, settings) -> int:
    """Entry point of `tally flush`."""
    setup_logging()
    config = CountingConfig.from_settings(settings)
    # Generous timeout: one round reads and writes tens of thousands of buckets.
    client = connect(settings, timeout=60.0)
    loops = [SinkLoop(build_sink(name, settings)) for name in settings.sinks]
    checkpoint = checkpoint_from_env()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    next_maintenance = 0.0
    ok = True
    try:
        while not stop.is_set():
            if "timescale" in settings.sinks and time.monotonic() >= next_maintenance:
                run_maintenance(settings)
                next_maintenance = time.monotonic() + settings.flush_maintenance_interval
            for loop in loops:
                if stop.is_set():
                    break
                if args.once or time.monotonic() >= loop.next_run:
                    ok = loop.step(client, config, settings, checkpoint) and ok
            if args.once:
                break
            stop.wait(_sleep_time(loops, settings.flush_interval))
    finally:
        for loop in loops:
            loop.sink.close()
        disconnect(client)
        log.info("stopped", extra={"fields": {"ok": ok}})
    return 0 if ok or not args.once else 1


def _sleep_time(loops, interval: float) -> float:
    """Sleep the interval, but wake for a sink whose backoff ends sooner."""
    now = time.monotonic()
    due = [loop.next_run - now for loop in loops if loop.failures]
    return max(0.05, min([interval, *due]))
