"""One flusher at a time per sink: a short lock kept alive by a heartbeat, with a fencing token.

Writes are absolute, so several flushers can never double-count, but a sink
that keeps the last write of a point (InfluxDB) could end with a smaller
value: a flusher that read a bucket before another flusher's newer read may
land its write last. Taking turns per sink rules that out; the others stand
by.

The lock (lua/lock_*.lua) is a hash {owner, until, fence} in Redis. It lasts
TALLY_FLUSH_LOCK_SECONDS (default 6 s) and a heartbeat thread renews it
every third of that while the run is alive, however long a write takes; a
killed holder stops renewing, so a successor takes the sink within that
time instead of after the in-flight marks' 120 s lease. Each acquisition
increments the fence; sinks that can check it atomically (TimescaleDB,
fence.py) refuse a write with an older fence, and the run checks the lock
before and after each write to the others (flush.py), so a holder that was
frozen while another took over cannot complete a write unnoticed.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

import redis

from tally import keys
from tally.ingest.counting import loader

log = logging.getLogger(__name__)


class LockLost(Exception):
    """Another flusher took the sink's lock: this run must not write any more."""


class Busy(NamedTuple):
    """Another flusher holds the lock; its lease ends in `retry_in` seconds unless renewed."""

    retry_in: float


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _call(client, name: str, sink: str, args) -> int:
    return loader.call(client, loader.FLUSHER, name, [keys.flusher_lock(sink)], args)


class Lease:
    """A held sink lock: its fence, and a heartbeat that renews it until `release`.

    Use as a context manager: the heartbeat starts on entry, and on exit it
    stops and the lock is dropped (if still ours).
    """

    def __init__(self, client, sink: str, owner: str, fence: int, seconds: float):
        self.client, self.sink, self.owner = client, sink, owner
        self.fence, self.seconds = fence, seconds
        self.lost = threading.Event()  # set once the heartbeat found the lock taken
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lock-{sink}", daemon=True)

    def __enter__(self) -> Lease:
        self._heartbeat.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._heartbeat.join()
        try:
            _call(self.client, "lock_release", self.sink, [self.owner])
        except redis.RedisError as exc:  # it expires by itself
            log.warning("could not drop the lock of sink %s (%s); it expires in %g s",
                        self.sink, exc, self.seconds)

    def _beat(self) -> None:
        """Renew every third of the lease; a Redis error is retried, a taken lock ends the beat."""
        while not self._stop.wait(self.seconds / 3):
            try:
                if not _call(self.client, "lock_renew", self.sink, [self.owner, _ms(self.seconds)]):
                    self.lost.set()
                    return
            except redis.RedisError as exc:
                log.warning("could not renew the lock of sink %s: %s", self.sink, exc)

    def verify(self) -> None:
        """Renew now and raise LockLost unless the lock is still ours (Redis errors propagate)."""
        if self.lost.is_set() or not _call(self.client, "lock_renew", self.sink,
                                           [self.owner, _ms(self.seconds)]):
            self.lost.set()
            raise LockLost(f"another flusher took the lock of sink {self.sink} "
                           f"(this run's fence {self.fence})")

    def raise_above(self, stored: int) -> None:
        """Make the fence larger than `stored`, one a sink kept from before Redis lost it."""
        fence = _call(self.client, "lock_raise", self.sink, [self.owner, stored])
        if not fence:
            self.lost.set()
            raise LockLost(f"another flusher took the lock of sink {self.sink}")
        self.fence = int(fence)


def acquire(client, sink: str, owner: str, seconds: float) -> Lease | Busy:
    """Take the sink's lock for `seconds` (not yet renewed: enter the Lease); Busy if held."""
    taken, value = _call(client, "lock_acquire", sink, [owner, _ms(seconds)])
    if not taken:
        return Busy(int(value) / 1000)
    return Lease(client, sink, owner, int(value), seconds)
