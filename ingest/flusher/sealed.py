"""Sealed days, as the flusher sees them: rows of a sealed UTC day are final and not written.

The batch layer seals a day (timescale/0008_sealed_days.sql) only once its
end plus the accepted lateness lies behind the archive watermark, so the
flusher meets a row of such a day only after a long outage or a Redis
restored from an old snapshot, whose smaller or stale values must not
overwrite the rebuilt ones. Rows of days that cannot be sealed yet (end +
lateness still ahead) pass without a query; for the others the sealed set is
read from sealed_days and cached for REFRESH seconds. If the database cannot
be read, the last set read stands (empty at first): the rows are written, as
before sealing existed, and the next rebuild corrects them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import date

import psycopg

from tally.ingest.flusher.sink import BucketRow
from tally.ingest.flusher.timescale import connect
from tally.resolutions import DAY

REFRESH = 60.0  # seconds a read of sealed_days is reused
EPOCH = date(1970, 1, 1)
log = logging.getLogger(__name__)


def day_of(row: BucketRow) -> int:
    """The UTC day index a row's bucket lies in."""
    return row.start // DAY


class SealedDays:
    """A cached view of sealed_days that filters a flush's rows."""

    def __init__(self, dsn: str, lateness: int, connect_timeout: float = 5.0):
        self.dsn, self.lateness, self.connect_timeout = dsn, lateness, connect_timeout
        self._days: frozenset[int] = frozenset()
        self._read_at = -REFRESH
        self._lock = threading.Lock()
        self.skipped_total = 0

    @classmethod
    def from_settings(cls, settings) -> SealedDays | None:
        """The cache for the settings' database; None without the event log (nothing seals)."""
        if not settings.event_log or not settings.postgres_dsn:
            return None
        return cls(settings.postgres_dsn, settings.accepted_lateness,
                   settings.sink_connect_timeout)

    def days(self) -> frozenset[int]:
        """Sealed day indexes, read again when the cached read is older than REFRESH."""
        with self._lock:
            if time.monotonic() - self._read_at >= REFRESH:
                try:
                    with connect(self.dsn, self.connect_timeout) as conn:
                        found = conn.execute("SELECT day FROM sealed_days").fetchall()
                    self._days = frozenset((day - EPOCH).days for (day,) in found)
                    self._read_at = time.monotonic()
                except psycopg.Error as exc:
                    log.warning("could not read sealed_days (rows are written): %s", exc)
            return self._days

    def stale(self) -> None:
        """Read sealed_days again at the next check."""
        with self._lock:
            self._read_at = -REFRESH

    def unsealed(self, rows: Sequence[BucketRow], now: float | None = None) -> list[BucketRow]:
        """The rows whose day is not sealed."""
        now = time.time() if now is None else now
        if not any((day_of(r) + 1) * DAY + self.lateness <= now for r in rows):
            return list(rows)
        sealed = self.days()
        kept = [r for r in rows if day_of(r) not in sealed]
        if len(kept) < len(rows):
            self.skipped_total += len(rows) - len(kept)
            log.info("rows of sealed days not written", extra={"fields": {
                "rows": len(rows) - len(kept)}})
        return kept


_SHARED: dict[tuple[str, int], SealedDays] = {}
_SHARED_LOCK = threading.Lock()


def shared(settings) -> SealedDays | None:
    """One cache per database and lateness in the process, so runs reuse its reads."""
    if not settings.event_log or not settings.postgres_dsn:
        return None
    with _SHARED_LOCK:
        key = (settings.postgres_dsn, settings.accepted_lateness)
        if key not in _SHARED:
            _SHARED[key] = SealedDays.from_settings(settings)
        return _SHARED[key]


def invalidate() -> None:
    """Make every cache of this process read sealed_days again (after sealing here)."""
    with _SHARED_LOCK:
        for cache in _SHARED.values():
            cache.stale()
