"""Flusher health per sink in the Redis hash tally:flusher:<sink>, read by the exporter."""

from __future__ import annotations

from ingest.counting import keys
from tally.flusher import handoff

FIELDS = ("lag_seconds", "last_run", "last_duration_seconds", "rows_total", "errors_total",
          "skipped_total", "last_error")


def lag_seconds(client, shards, sink: str, now: float) -> float:
    """Age of the oldest mark of a sink, dirty or in flight; 0 when drained."""
    oldest = handoff.oldest(client, shards, sink)
    return 0.0 if oldest is None else max(0.0, now - oldest)


def record(client, sink: str, *, now: float, duration: float, rows: int, lag: float,
           error: str | None, skipped: int = 0) -> None:
    """Write one run's outcome: gauges set, totals incremented, last_error kept until success."""
    pipe = client.pipeline(transaction=False)
    name = keys.flusher_health(sink)
    pipe.hset(name, mapping={"lag_seconds": f"{lag:.3f}", "last_run": f"{now:.3f}",
                             "last_duration_seconds": f"{duration:.3f}",
                             "last_error": error or ""})
    pipe.hincrby(name, "rows_total", rows)
    pipe.hincrby(name, "skipped_total", skipped)
    pipe.hincrby(name, "errors_total", 1 if error else 0)
    pipe.execute()
