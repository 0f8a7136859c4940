"""InfluxDB sink over the v1 HTTP API (/write), which 1.x serves and 2.x/3.x keep for compatibility.

Per-key points go to measurement `counts` (tags counter, key; fields value,
uniques); counter totals to `counts_total` (tag counter; field value); the
names are tally/backends.py's. Each resolution goes to its retention policy
(tally/resolutions.py). A point with the same series and
timestamp replaces the stored one, so writing absolute values is idempotent.
"""

from __future__ import annotations

import gzip
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import requests

from tally.backends import MEASUREMENT, TOTALS_MEASUREMENT
from tally.errors import SinkError
from tally.ingest.flusher import lineprotocol
from tally.ingest.flusher.influx_setup import auth_options
from tally.ingest.flusher.sink import BucketRow
from tally.redact import redact
from tally.resolutions import TABLE

RETENTION = {r.code: r.retention_policy for r in TABLE}  # resolution code -> retention policy
# Measured with bench/bench_flush.py on 2 cores: two writers ~1.5x one; gzip
# costs more CPU than it saves on a local link; 5k-20k points per POST alike.
CHUNK = 10_000  # points per request
WRITERS = 2
log = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def _series(counter: str) -> tuple[str, str]:
    """Line starts of a counter's per-key points and of its total (names from backends.py)."""
    tag = lineprotocol.tag_value(counter)
    return f"{MEASUREMENT},counter={tag},key=", f"{TOTALS_MEASUREMENT},counter={tag} value="


def point(row: BucketRow) -> str | None:
    """Line protocol of one row; None for a key InfluxDB 1.x cannot store unchanged."""
    per_key, total = _series(row.counter)
    if row.key is None:
        return f"{total}{row.value}i {row.start}"
    if not lineprotocol.representable(row.key):
        return None
    uniques = "" if row.uniques is None else f",uniques={row.uniques}i"
    return f"{per_key}{lineprotocol.escape(row.key)} value={row.value}i{uniques} {row.start}"


class InfluxSink:
    """Writes featured keys and counter totals to InfluxDB.

    Bodies of `chunk` points each, optionally gzip-compressed, posted by
    `writers` threads (one HTTP session each); a write returns once every body
    was accepted, and raises SinkError if any was not. `timeout` is requests'
    (connect, read) pair: a server that stops answering fails the write after
    the read timeout rather than holding it.
    """

    name = "influx"
    per_key = "featured"

    def __init__(self, url: str, db: str, auth: dict | None = None,
                 timeout: float | tuple[float, float] = (5.0, 30.0), *,
                 chunk: int = CHUNK, gzip: bool = False, writers: int = WRITERS):
        if chunk < 1 or writers < 1:
            raise ValueError(f"chunk ({chunk}) and writers ({writers}) must be >= 1")
        auth = dict(auth or {})
        self.headers = auth.pop("headers", {})
        self.url, self.db, self.auth, self.timeout = url.rstrip("/"), db, auth, timeout
        self.chunk, self.gzip = chunk, gzip
        self.sessions = [requests.Session() for _ in range(writers)]
        self._pool = ThreadPoolExecutor(writers, "influx-write") if writers > 1 else None
        self.skipped_total = 0

    @classmethod
    def from_settings(cls, settings, **options) -> InfluxSink:
        """Sink for settings.influx_url / influx_db with the configured credentials and timeouts."""
        timeout = (settings.sink_connect_timeout, settings.sink_write_timeout)
        return cls(settings.influx_url, settings.influx_db, auth_options(settings), timeout,
                   **options)

    def claim(self, held) -> None:
        """No transaction to check a fence in: flush.py checks the lock around each write."""

    def bodies(self, rows: Sequence[BucketRow]) -> list[tuple[str, str, int]]:
        """(retention policy, body, points) per request for rows; unstorable keys skipped."""
        lines: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            text = point(row)
            if text is None:
                self.skipped_total += 1
                log.warning("influx: key %r cannot be a 1.x tag value; per-key point skipped",
                            row.key)
                continue
            lines[RETENTION[row.resolution]].append(text)
        return [(rp, "\n".join(part), len(part)) for rp, batch in lines.items()
                for part in (batch[i:i + self.chunk] for i in range(0, len(batch), self.chunk))]

    def write(self, rows: Sequence[BucketRow]) -> int:
        """POST the rows, one request per retention policy and chunk; return points written."""
        bodies = self.bodies(rows)
        self.post(bodies)
        return sum(points for _, _, points in bodies)

    def post(self, bodies: Sequence[tuple[str, str, int]]) -> None:
        """POST (retention policy, body, points) requests, spread over the writer threads."""
        n = len(self.sessions)
        if self._pool is None or len(bodies) < 2:
            self._post_share(self.sessions[0], bodies)
            return
        shares = [bodies[i::n] for i in range(n)]
        list(self._pool.map(self._post_share, self.sessions, shares))  # re-raises a failure

    def _post_share(self, session: requests.Session,
                    bodies: Sequence[tuple[str, str, int]]) -> None:
        for rp, body, _ in bodies:
            self._post(session, rp, body)

    def _post(self, session: requests.Session, rp: str, body: str) -> None:
        data, headers = body.encode(), self.headers
        if self.gzip:
            data = gzip.compress(data, compresslevel=1)
            headers = headers | {"Content-Encoding": "gzip"}
        try:
            response = session.post(
                f"{self.url}/write", params={"db": self.db, "rp": rp, "precision": "s"},
                data=data, headers=headers, timeout=self.timeout, **self.auth)
        except requests.RequestException as exc:
            raise SinkError(f"InfluxDB at {redact(self.url)} did not answer: "
                            f"{redact(str(exc))}") from exc
        if response.status_code != 204:
            raise SinkError(f"InfluxDB refused a write to rp {rp}: "
                            f"{response.status_code} {response.text.strip()}")

    def close(self) -> None:
        """Stop the writer threads and close the HTTP sessions."""
        if self._pool is not None:
            self._pool.shutdown()
        for session in self.sessions:
            session.close()
