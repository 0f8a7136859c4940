"""Flusher health per sink in the Redis hash tally:flusher:<sink>, read by the exporter.

Lag is not here: the exporter computes it from the dirty and in-flight sets
at every scrape, so a hung or killed flusher cannot leave a stale lag behind.
A hung or dead flusher shows as a `last_success` that stops advancing.
"""

from __future__ import annotations

from tally import keys


def record(client, sink: str, *, now: float, duration: float, rows: int, error: str | None,
           skipped: int = 0) -> None:
    """Write one run's outcome: gauges set, totals incremented, last_error kept until success."""
    pipe = client.pipeline(transaction=False)
    name = keys.flusher_health(sink)
    gauges = {"last_run": f"{now:.3f}", "last_duration_seconds": f"{duration:.3f}",
              "last_error": error or ""}
    if error is None:
        gauges["last_success"] = f"{now:.3f}"
    pipe.hset(name, mapping=gauges)
    pipe.hincrby(name, "rows_total", rows)
    pipe.hincrby(name, "skipped_total", skipped)
    pipe.hincrby(name, "errors_total", 1 if error else 0)
    pipe.execute()
