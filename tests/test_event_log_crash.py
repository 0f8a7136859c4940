"""Archivers SIGKILLed at random points while events keep arriving: `events` ends exact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

from tally.events import Event
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import archive
from tests.reference_model import ReferenceModel
from tests.test_event_log import HOSTILE_KEYS, _row, _settings, archive_all, stored_events
from tests.test_flusher_crash import _await_log

# Every checkpoint of an archiver round: after the read, between the COPY's commit and
# the trim, after the trim.
POINTS = [f"{point}:{archive.NAME}" for point in ("read", "archived", "trimmed")]
KILLS = 24


def _archiver(settings, point: str | None) -> subprocess.Popen:
    """`tally flush` with no sinks: the archiver alone, pausing 0.3 s at `point`."""
    env = os.environ | {
        "TALLY_REDIS_URL": settings.redis_url, "TALLY_POSTGRES_DSN": settings.postgres_dsn,
        "TALLY_SHARDS": str(settings.shards), "TALLY_SINKS": "",
        "TALLY_FLUSH_INTERVAL": "0.05", "TALLY_FLUSH_LEASE_SECONDS": "1",
        "TALLY_FLUSH_LOCK_SECONDS": "1",
        "TALLY_SINK_WRITE_TIMEOUT": "0.9", "TALLY_FLUSH_PAUSE_AT": point or "",
        "TALLY_FLUSH_PAUSE_SECONDS": "0.3"}
    return subprocess.Popen([sys.executable, "-m", "tally.stack.cli", "flush"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Feed(threading.Thread):
    """Applies a batch every 20 ms (ids, retries, users, props) and keeps the model."""

    def __init__(self, client, config: CountingConfig):
        super().__init__(daemon=True)
        self.client, self.config, self.model = client, config, ReferenceModel()
        self.rng, self.stop, self.error = random.Random(23), threading.Event(), None

    def run(self) -> None:
        recent: list[Event] = []
        try:
            while not self.stop.is_set():
                now = time.time()
                rng = self.rng
                batch = [Event("views", rng.choice(HOSTILE_KEYS), int(now) - rng.randrange(90),
                               id=rng.choice([None, f"e{rng.getrandbits(40):x}"]),
                               user=rng.choice([None, "u1", "u2"]),
                               props=rng.choice([None, {"n": str(rng.randrange(9))}]))
                         for _ in range(rng.randrange(1, 30))]
                batch += rng.sample(recent, min(len(recent), 5))  # retries
                recent = [e for e in batch if e.id is not None][-20:]
                applied = apply_batch(self.client, self.config, batch, now=now)
                assert applied == self.model.apply(batch, int(now))
                time.sleep(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_killed_archivers_store_every_event_exactly_once(redis_client, redis_url, pg_dsn):
    settings = _settings(redis_url, pg_dsn, shards=4)
    feed = Feed(redis_client, CountingConfig.from_settings(settings))
    feed.start()
    rng, paused = random.Random(5), Counter()
    try:
        for kill in range(KILLS):
            # Three in four at a named point in turn, the rest at a random moment of a run.
            point = POINTS[kill % 3] if kill < KILLS * 3 // 4 else None
            proc = _archiver(settings, point)
            if point is not None and _await_log(proc, f'"point": "{point}"', 30):
                paused[point] += 1
            else:
                _await_log(proc, '"sink": "events"', 30)
                time.sleep(rng.uniform(0, 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
    finally:
        feed.stop.set()
        feed.join()
    assert feed.error is None, feed.error
    assert paused == dict.fromkeys(POINTS, KILLS // 4), paused  # every point was hit
    time.sleep(1.1)  # the last killed archiver's lock expires
    archive_all(redis_client, settings)
    assert stored_events(pg_dsn) == Counter(_row(e) for e in feed.model.logged)
    assert len(feed.model.logged) > 500
