"""A run of many rounds under one lease: events arriving between rounds still reach both sinks."""

from __future__ import annotations

import time

from tally.ingest.counting.config import CountingConfig
from tally.ingest.flusher import flush
from tally.ingest.flusher.sinks import build_sink
from tests.flusher_support import (
    expected,
    expected_totals,
    flush_all,
    ingest,
    make_settings,
    stored_influx,
    stored_pg,
)
from tests.reference_model import ReferenceModel


def _flush_with_events_between_rounds(client, settings, model, late: dict, now: float) -> None:
    """Flush each sink; after its first round's read, ingest late[sink] (marks for later rounds)."""
    config = CountingConfig.from_settings(settings)
    for name in settings.sinks:
        pending = list(late[name])

        def checkpoint(point: str, pending=pending) -> None:
            if point.startswith("read:") and pending:
                ingest(client, settings, model, pending, now)
                pending.clear()

        sink = build_sink(name, settings)
        try:
            result = flush.flush_sink(client, config, sink, settings, checkpoint)
        finally:
            sink.close()
        assert result.marks > len(late[name])  # several rounds, the late marks among them
    flush_all(client, settings)  # the influx run's late events are still dirty for timescale


def test_totals_and_top_n_follow_events_between_rounds(redis_client, redis_url, pg_dsn, influx):
    """A bucket summarized in round 1 and re-marked later gets its final total and top key."""
    settings = make_settings(redis_url, pg_dsn, influx, influx_top_n=1,
                             flush_batch_size=4)  # 4 shards: 1 mark per shard and round
    now, model = time.time(), ReferenceModel()
    ingest(redis_client, settings, model, [{"counter": "v", "key": k, "ts": now, "value": i + 1}
                                           for i, k in enumerate("abcdefgh")], now)
    late = {"timescale": [{"counter": "v", "key": "z", "ts": now, "value": 100},
                          {"counter": "v", "key": "a", "ts": now, "value": 5}],
            "influx": [{"counter": "v", "key": "y", "ts": now, "value": 120},
                       {"counter": "v", "key": "b", "ts": now, "value": 1}]}
    _flush_with_events_between_rounds(redis_client, settings, model, late, now)
    assert stored_pg(pg_dsn) == expected(model)
    per_key, totals = stored_influx(influx)
    # z led when the influx run summarized the minute; y passed it during the run.
    assert {k for (r, _, k, _) in per_key if r == "m"} == {"y", "z"}
    assert totals == expected_totals(model)
    assert totals[("m", "v", int(now) // 60)] == 36 + 100 + 5 + 120 + 1
    assert not redis_client.keys("*inflight*") and not redis_client.keys("*leases*")
    assert not redis_client.keys("*dirty*")
