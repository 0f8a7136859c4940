"""InfluxDB sink over the v1 HTTP API (/write), which 1.x serves and 2.x/3.x keep for compatibility.

Per-key points go to measurement `counts` (tags counter, key; fields value,
uniques); counter totals to `counts_total` (tag counter; field value). Each
resolution goes to its retention policy. A point with the same series and
timestamp replaces the stored one, so writing absolute values is idempotent.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import requests

from tally.errors import SinkError
from tally.flusher import lineprotocol
from tally.flusher.sink import BucketRow
from tally.influx_setup import auth_options

RETENTION = {"m": "minute_7d", "h": "hour_1y", "d": "day_inf"}
CHUNK = 20_000  # points per request
log = logging.getLogger(__name__)


def point(row: BucketRow) -> str | None:
    """Line protocol of one row; None for a key InfluxDB 1.x cannot store unchanged."""
    if row.key is None:
        return lineprotocol.line("counts_total", {"counter": row.counter},
                                 {"value": row.value}, row.start)
    if not lineprotocol.representable(row.key):
        return None
    fields = {"value": row.value}
    if row.uniques is not None:
        fields["uniques"] = row.uniques
    return lineprotocol.line("counts", {"counter": row.counter, "key": row.key}, fields, row.start)


class InfluxSink:
    """Writes featured keys and counter totals to InfluxDB."""

    name = "influx"
    per_key = "featured"

    def __init__(self, url: str, db: str, auth: dict | None = None, timeout: float = 10.0):
        self.url, self.db, self.auth, self.timeout = url.rstrip("/"), db, auth or {}, timeout
        self.session = requests.Session()
        self.skipped_total = 0

    @classmethod
    def from_settings(cls, settings) -> InfluxSink:
        """Sink for settings.influx_url / influx_db with the configured credentials."""
        return cls(settings.influx_url, settings.influx_db, auth_options(settings))

    def write(self, rows: Sequence[BucketRow]) -> int:
        """POST the rows, one request per retention policy and chunk; return points written."""
        lines: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            text = point(row)
            if text is None:
                self.skipped_total += 1
                log.warning("influx: key %r cannot be a 1.x tag value; per-key point skipped",
                            row.key)
                continue
            lines[RETENTION[row.resolution]].append(text)
        for rp, batch in lines.items():
            for start in range(0, len(batch), CHUNK):
                self._post(rp, "\n".join(batch[start:start + CHUNK]))
        return sum(len(batch) for batch in lines.values())

    def _post(self, rp: str, body: str) -> None:
        try:
            response = self.session.post(
                f"{self.url}/write", params={"db": self.db, "rp": rp, "precision": "s"},
                data=body.encode(), timeout=self.timeout, **self.auth)
        except requests.RequestException as exc:
            raise SinkError(f"InfluxDB at {self.url} did not answer: {exc}") from exc
        if response.status_code != 204:
            raise SinkError(f"InfluxDB refused a write to rp {rp}: "
                            f"{response.status_code} {response.text.strip()}")

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()
