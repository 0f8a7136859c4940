"""Sealing and the serving merge together: a sealed day is served exactly, even re-counted."""

from __future__ import annotations

import random
import time

from tally.events import Event
from tally.ingest.api import close_app
from tally.ingest.api.params import rfc3339
from tally.ingest.batch.seal import seal_closed_days
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tests.batch_support import DAY, count_stream, hostile_raws, truncate_sealed
from tests.flusher_support import expected, make_settings
from tests.reference_model import ReferenceModel
from tests.test_api_support import R, make_app


def test_sealed_days_served_exactly_after_a_stale_redis(redis_client, redis_url, pg_dsn,
                                                        postgres_owner_dsn):
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1", sinks=("timescale",))
    model, rng = ReferenceModel(), random.Random(5)
    old = time.time() - 3 * DAY
    count_stream(redis_client, settings, model, hostile_raws(rng, old, 800, 20 * 3600), old)
    recent = time.time()
    count_stream(redis_client, settings, model, hostile_raws(rng, recent, 100, 3600), recent)
    sealed = seal_closed_days(settings)
    assert sealed
    want = expected(model)
    # Redis re-counts a sealed day (restored from an old snapshot): the API must not show it.
    stale = Event("views", "video:1", sealed[-1] * DAY + 5, value=1000)
    apply_batch(redis_client, CountingConfig.from_settings(settings), [stale], now=old)
    app = make_app(redis_url, series_history=True, postgres_dsn=pg_dsn, shards=4)
    api = app.test_client()
    first, last = min(sealed), int(time.time()) // DAY
    checked = 0
    for counter, key in {(c, k) for (_r, c, k, _i) in want}:
        for step, code, seconds in (("1d", "d", DAY), ("1h", "h", 3600)):
            body = api.get(f"/v1/counters/{counter}/series", headers=R, query_string={
                "key": key, "step": step, "from": rfc3339(first * DAY),
                "to": rfc3339((last + 1) * DAY)}).json
            assert body["history"] == "timescale"
            for p in body["points"]:
                v, u = want.get((code, counter, key, p["ts"] // seconds), (0, 0))
                assert p["sealed"] == (p["ts"] // DAY in sealed), (step, p)
                if p["sealed"]:
                    assert (p["value"], p["uniques"]) == (v, u), (counter, key, step, p)
                    checked += 1
                else:
                    assert p["value"] == v, (counter, key, step, p)
    assert checked > 0
    close_app(app)
    truncate_sealed(postgres_owner_dsn)
