"""Race: rebuilds looping alongside live ingest, archiving and flushes never leave a bucket below
the events accepted for it, once everything has settled."""

from __future__ import annotations

import random
import threading
import time

from tally.ingest.batch.rebuild import rebuild
from tally.redis_connect import connect, disconnect
from tests.batch_support import FEATURED
from tests.flusher_support import expected, flush_all, ingest, make_settings, stored_pg
from tests.reference_model import ReferenceModel
from tests.test_event_log import archive_all

RUN = 14.0  # seconds of racing, across a minute boundary


def _until_second(second: int) -> None:
    """Sleep until the wall clock's seconds within the minute reach `second`."""
    time.sleep((second - time.time() % 60) % 60)


def test_rebuilds_racing_ingest_and_flushes_never_lose_events(redis_url, pg_dsn):
    # No lateness and no skew: a minute is complete as soon as it is over and archived,
    # so the race meets complete buckets (replaced) and open ones (raised) alike.
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", sinks=("timescale",),
                             accepted_lateness=0, clock_skew=0, influx_keys=FEATURED)
    model, lock, stop = ReferenceModel(), threading.Lock(), threading.Event()
    errors: list[BaseException] = []
    rebuilds = [0]

    def loop(step) -> None:
        client = connect(settings, timeout=60.0)
        try:
            while not stop.is_set():
                step(client)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            stop.set()
        finally:
            disconnect(client)

    rng = random.Random(5)

    def post(client) -> None:
        raws = [{"counter": "views", "key": rng.choice(["a", "b", "ключ"]),
                 "id": f"e{rng.getrandbits(40):x}", "user": f"u{rng.randrange(20)}"}
                for _ in range(20)]
        raws += raws[:3]  # retries
        with lock:  # the model and Redis see the batches in the same order
            ingest(client, settings, model, raws, time.time())

    def archive_and_flush(client) -> None:
        archive_all(client, settings)
        flush_all(client, settings)

    def rebuild_now(client) -> None:
        now = time.time()
        rebuild(settings, now - 120, now + 60)
        rebuilds[0] += 1

    _until_second(50)
    threads = [threading.Thread(target=loop, args=(step,))
               for step in (post, archive_and_flush, rebuild_now)]
    for thread in threads:
        thread.start()
    time.sleep(RUN)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert rebuilds[0] >= 3 and model.applied > 100

    client = connect(settings)
    try:  # settle: the last events archived and flushed, no further rebuild
        archive_all(client, settings)
        flush_all(client, settings)
    finally:
        disconnect(client)
    stored, want = stored_pg(pg_dsn), expected(model)
    below = {cell: (stored.get(cell, (0, 0))[0], value) for cell, (value, _) in want.items()
             if stored.get(cell, (0, 0))[0] < value}
    assert below == {}
    assert {cell: v[0] for cell, v in stored.items()} == {c: v[0] for c, v in want.items()}
