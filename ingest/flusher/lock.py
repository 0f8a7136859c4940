"""One flusher at a time per sink: a Redis lock that lives as long as a run's lease.

Writes are absolute, so several flushers can never double-count, but a sink
that keeps the last write of a point (InfluxDB) could end with a smaller
value: a flusher that read a bucket before another flusher's newer read may
land its write last. Taking turns per sink rules that out; the others stand
by, and a killed holder's lock expires with its lease.
"""

from __future__ import annotations

from tally import keys
from tally.ingest.counting import loader


class LockLost(Exception):
    """The run outlived its lease and another flusher may hold the sink now."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def acquire(client, sink: str, token: str, seconds: float) -> bool:
    """Take the sink's lock for `seconds`; False when another flusher holds it."""
    return bool(client.set(keys.flusher_lock(sink), token, nx=True, px=_ms(seconds)))


def renew(client, sink: str, token: str, seconds: float) -> None:
    """Extend the lock with the run's lease; raise LockLost if it is no longer ours."""
    if not loader.call(client, loader.FLUSHER, "lock_renew", [keys.flusher_lock(sink)],
                       [token, _ms(seconds)]):
        raise LockLost(f"flusher lock of sink {sink} expired during the run")


def release(client, sink: str, token: str) -> None:
    """Drop the lock if it is still ours."""
    loader.call(client, loader.FLUSHER, "lock_release", [keys.flusher_lock(sink)], [token])
