"""Flushed buckets equal the reference model exactly, in both sinks, after mid-stream flushes."""

from __future__ import annotations

import random
import time

import pytest

from tests.flusher_support import (
    assert_sinks_hold,
    flush_all,
    ingest,
    make_settings,
    stored_influx,
    stored_pg,
    stream,
)
from tests.reference_model import ReferenceModel

KEYS = ["video:1", "video:2", "hot", "a b", "x,y=z", "ключ", "🎬", *[f"k{i}" for i in range(30)]]
FEATURED = ("video:1", "hot", "a b", "x,y=z", "🎬")


def _run_stream(client, settings) -> ReferenceModel:
    rng, model = random.Random(7), ReferenceModel()
    now = time.time() - 600
    for step in range(6):
        ingest(client, settings, model, stream(rng, now, 150, KEYS), now)
        if step % 2:
            flush_all(client, settings)
        now += 100
    flush_all(client, settings)
    return model


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_stream_with_duplicates_late_and_out_of_order_events_is_exact(
        request, cluster, pg_dsn, influx):
    """Every minute/hour/day bucket and counter total matches the model; no extra rows."""
    fixture = "redis_cluster_client" if cluster else "redis_client"
    client = request.getfixturevalue(fixture)
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    settings = make_settings(url, pg_dsn, influx, redis_cluster=cluster,
                             influx_keys=FEATURED, hot_keys="views=hot=3\nplays=hot=2",
                             flush_batch_size=40)
    model = _run_stream(client, settings)
    assert_sinks_hold(model, settings, FEATURED)
    assert not client.keys("*dirty*") and not client.keys("*inflight*")


def test_late_event_corrects_minute_hour_and_day_in_both_sinks(redis_client, redis_url, pg_dsn,
                                                                influx):
    """A late event for a flushed minute rewrites that minute, hour and day on the next flush."""
    settings = make_settings(redis_url, pg_dsn, influx, influx_keys=("video:1",))
    model, now = ReferenceModel(), time.time()
    ingest(redis_client, settings, model, [{"counter": "views", "key": "video:1",
                                            "ts": now - 7200, "user": "a"}], now)
    flush_all(redis_client, settings)
    ingest(redis_client, settings, model, [{"counter": "views", "key": "video:1",
                                            "ts": now - 7200, "value": 4, "user": "b"}], now + 5)
    flush_all(redis_client, settings)
    minute, hour, day = int(now - 7200) // 60, int(now - 7200) // 3600, int(now - 7200) // 86400
    pg = stored_pg(pg_dsn)
    per_key, totals = stored_influx(influx)
    for res, index in (("m", minute), ("h", hour), ("d", day)):
        assert pg[(res, "views", "video:1", index)] == (5, 2)
        assert per_key[(res, "views", "video:1", index)] == (5, 2)
        assert totals[(res, "views", index)] == 5
    assert_sinks_hold(model, settings, ("video:1",))

