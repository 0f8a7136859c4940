"""The resolution table: one row per bucket size, everything else derives from it.

Each resolution names its bucket length, how long its history is kept, and
where each backend keeps it (the TimescaleDB table, the InfluxDB retention
policy). Redis key names, the flusher's sinks, retention, the API's series
reads and the dashboards all take these from here.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE, HOUR, DAY = 60, 3600, 86400


@dataclass(frozen=True)
class Resolution:
    """One bucket size and where its history lives."""

    code: str  # "m", "h", "d": the letter in Redis key names and BucketRow.resolution
    seconds: int
    keep_days: int | None  # None = kept forever
    table: str  # TimescaleDB table
    retention_policy: str  # InfluxDB retention policy


TABLE = (
    Resolution("m", MINUTE, 7, "counts_1m", "minute_7d"),
    Resolution("h", HOUR, 365, "counts_1h", "hour_1y"),
    Resolution("d", DAY, None, "counts_1d", "day_inf"),
)
BY_CODE = {r.code: r for r in TABLE}
RESOLUTIONS = {r.code: r.seconds for r in TABLE}  # code -> bucket seconds
