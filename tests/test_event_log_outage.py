"""PostgreSQL down under load: the log fills to its bound, ingest answers 503, nothing is lost."""

from __future__ import annotations

import random
import time
from collections import Counter

import requests

from tally import keys
from tally.events import Event
from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher.influx_setup import ensure_influx
from tests.flusher_support import assert_sinks_hold, flush_all, make_settings, wait_until
from tests.reference_model import ReferenceModel
from tests.test_api_support import W, gunicorn, ndjson
from tests.test_event_log import _row, archive_all, stored_events
from tests.test_flusher_outage import _end, _flusher, own_servers  # noqa: F401 - fixture

KEYS = ["video:1", *[f"k{i}" for i in range(11)]]
BOUND = 200  # TALLY_EVENT_LOG_MAX: unarchived events per log stream


def _backlogs(client, config: CountingConfig) -> list[int]:
    """Unarchived events of each shard's log."""
    return [int(client.hget(keys.shard_keys("views", s).stats, "log_backlog") or 0)
            for s in range(config.shards)]


class Poster:
    """Posts batches of events with ids; the model keeps exactly those answered 200."""

    def __init__(self, base: str):
        self.base, self.model, self.rng = base, ReferenceModel(), random.Random(9)
        self.statuses: Counter = Counter()

    def post(self) -> requests.Response:
        now = int(time.time())
        raws = [{"counter": "views", "key": self.rng.choice(KEYS), "ts": now,
                 "id": f"e{self.rng.getrandbits(48):x}", "user": f"u{self.rng.randrange(5)}"}
                for _ in range(20)]
        answer = requests.post(self.base + "/v1/events", data=ndjson(raws), timeout=15,
                               headers=W | {"Content-Type": "application/x-ndjson"})
        self.statuses[answer.status_code] += 1
        if answer.status_code == 200:
            events = [Event(**raw) for raw in raws]
            assert answer.json()["accepted"] == self.model.apply(events, now)[0] == 20
        else:
            assert answer.status_code == 503, answer.text
            assert answer.json()["type"].endswith("event-log-full"), answer.text
            assert int(answer.headers["Retry-After"]) > 0
        return answer


def test_postgres_outage_fills_the_log_then_ingest_resumes_by_itself(
        own_servers, redis_client, redis_url, tmp_path):  # noqa: F811 - fixture
    pg, influx = own_servers
    settings = make_settings(redis_url, pg.url, influx.url, shards=2,
                             event_log_max=BOUND, influx_keys=("video:1",))
    ensure_influx(settings)
    config = CountingConfig.from_settings(settings)
    flusher = _flusher(settings, TALLY_EVENT_LOG_MAX=str(BOUND))
    try:
        with gunicorn(redis_url, 2, tmp_path, shards=2, event_log_max=BOUND) as (base, _):
            poster = Poster(base)
            for _ in range(5):
                assert poster.post().status_code == 200
            pg.stop()
            deadline = time.monotonic() + 60
            while poster.post().status_code != 503:
                assert time.monotonic() < deadline, "the log never filled"
            for _ in range(5):  # full: every batch is refused, none half-counted
                assert poster.post().status_code == 503
            # A batch is refused once a shard it touches is full: at most one batch past.
            assert BOUND <= max(_backlogs(redis_client, config)) < BOUND + 20
            pg.start()
            wait_until(lambda: not any(_backlogs(redis_client, config)), timeout=60)
            for _ in range(5):  # resumed without anyone touching it
                assert poster.post().status_code == 200
        assert poster.statuses[503] >= 6 and set(poster.statuses) == {200, 503}
    finally:
        _end(flusher)
    flush_all(redis_client, settings)
    archive_all(redis_client, settings)
    model = poster.model
    for key in KEYS:
        assert reads.total(redis_client, config, "views", key) == model.total("views", key)
    assert stored_events(settings.postgres_dsn) == Counter(_row(e) for e in model.logged)
    assert_sinks_hold(model, settings, ("video:1",))
