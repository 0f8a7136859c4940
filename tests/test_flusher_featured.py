"""InfluxDB per-key series: allowlist, top-N per bucket, and once featured always rewritten."""

from __future__ import annotations

import time

from tests.flusher_support import flush_all, ingest, make_settings, stored_influx
from tests.reference_model import ReferenceModel


def test_top_n_keys_stay_featured_when_corrected(redis_client, redis_url, pg_dsn,
                                                 influx):
    """The top 2 keys get series; a key that fell out of the top 2 is still rewritten."""
    settings = make_settings(redis_url, pg_dsn, influx, influx_top_n=2,
                             sinks=("influx",))
    now, model = time.time(), ReferenceModel()
    values = {"a": 10, "b": 8, "c": 1}
    ingest(redis_client, settings, model, [{"counter": "v", "key": k, "ts": now, "value": v}
                                           for k, v in values.items()], now)
    flush_all(redis_client, settings)
    minute = int(now) // 60
    per_key, totals = stored_influx(influx)
    assert {k for (r, _, k, i) in per_key if r == "m"} == {"a", "b"}
    assert totals[("m", "v", minute)] == 19
    more = [{"counter": "v", "key": "c", "ts": now, "value": 20},
            {"counter": "v", "key": "b", "ts": now, "value": 1}]
    ingest(redis_client, settings, model, more, now)  # c enters the top 2, b (now 9) leaves it
    flush_all(redis_client, settings)
    per_key, totals = stored_influx(influx)
    assert {k: v for (r, _, k, i), (v, _) in per_key.items() if r == "m"} == {
        "a": 10, "b": 9, "c": 21}
    assert totals[("m", "v", minute)] == 40


def test_ties_never_feature_more_than_n_keys(redis_client, redis_url, pg_dsn,
                                             influx):
    """Equal values rank by key, so exactly N keys get series (cardinality stays bounded)."""
    settings = make_settings(redis_url, pg_dsn, influx, influx_top_n=2, sinks=("influx",))
    now = time.time()
    ingest(redis_client, settings, ReferenceModel(),
           [{"counter": "v", "key": k, "ts": now} for k in "edcba"], now)
    flush_all(redis_client, settings)
    per_key, totals = stored_influx(influx)
    assert {k for (r, _, k, _) in per_key if r == "m"} == {"a", "b"}
    assert totals[("m", "v", int(now) // 60)] == 5
