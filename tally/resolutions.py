"""The resolution table: one row per bucket size, everything else derives from it.

Each resolution names its bucket length, the API's step name for it, how long
its history is kept, and where each backend keeps it (the TimescaleDB table,
the InfluxDB retention policy). Redis key names, the flusher's sinks and
retention, InfluxDB setup, the API's series reads and the dashboards all take
these from here; tests/test_resolutions.py checks that the SQL migrations and
the retention policies InfluxDB reports agree with this table.

Retention is counted in whole days in both backends (TimescaleDB
`INTERVAL 'N days'`, InfluxQL `Nd`), never in months or years, whose length
varies: hours are kept 365 days everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE, HOUR, DAY = 60, 3600, 86400


@dataclass(frozen=True)
class Resolution:
    """One bucket size and where its history lives."""

    code: str  # "m", "h", "d": the letter in Redis key names and BucketRow.resolution
    seconds: int
    step: str  # the series API's step name ("1m", "1h", "1d")
    keep_days: int | None  # None = kept forever
    table: str  # TimescaleDB table
    retention_policy: str  # InfluxDB retention policy
    default_policy: bool = False  # InfluxDB's default RP (where a write without rp= goes)

    @property
    def influx_duration(self) -> str:
        """Retention as InfluxQL writes it in CREATE/ALTER RETENTION POLICY."""
        return "INF" if self.keep_days is None else f"{self.keep_days}d"

    @property
    def influx_duration_shown(self) -> str:
        """Retention as SHOW RETENTION POLICIES prints it (hours, "0s" for forever)."""
        return "0s" if self.keep_days is None else f"{self.keep_days * 24}h0m0s"

    @property
    def timescale_interval(self) -> str | None:
        """Retention as a PostgreSQL interval ("7 days"); None = no expiry."""
        return None if self.keep_days is None else f"{self.keep_days} days"


TABLE = (
    Resolution("m", MINUTE, "1m", 7, "counts_1m", "minute_7d", default_policy=True),
    Resolution("h", HOUR, "1h", 365, "counts_1h", "hour_1y"),
    Resolution("d", DAY, "1d", None, "counts_1d", "day_inf"),
)
BY_CODE = {r.code: r for r in TABLE}
BY_STEP = {r.step: r for r in TABLE}
BY_POLICY = {r.retention_policy: r for r in TABLE}
RESOLUTIONS = {r.code: r.seconds for r in TABLE}  # code -> bucket seconds
TABLES = tuple(r.table for r in TABLE)
