"""The endpoints a client finds its way with: counters, leaderboards, a counter's rate, flusher."""

from __future__ import annotations

import time

from tally.ingest.flusher import metrics
from tests.test_api_support import R, W


def post(api, events):
    answer = api.post("/v1/events", json=events, headers=W)
    assert answer.status_code == 200, answer.json


def test_counters_lists_every_counter_that_counted(api):
    assert api.get("/v1/counters", headers=R).json == {"counters": []}
    post(api, [{"counter": "views", "key": "a"}, {"counter": "likes", "key": "b"}])
    assert api.get("/v1/counters", headers=R).json == {"counters": ["likes", "views"]}


def test_overview_endpoints_need_a_read_token(api):
    for path in ("/v1/counters", "/v1/leaderboards", "/v1/flusher", "/v1/counters/views/rate"):
        assert api.get(path).status_code == 401
        assert api.get(path, headers=W).status_code == 403


def test_leaderboards_lists_names_and_sizes(api):
    for board, member in (("games", "ann"), ("games", "bob"), ("chess", "cy")):
        answer = api.put(f"/v1/leaderboards/{board}/scores", json={"member": member, "score": 3},
                         headers=W)
        assert answer.status_code == 200
    assert api.get("/v1/leaderboards", headers=R).json == {
        "leaderboards": [{"board": "chess", "size": 1}, {"board": "games", "size": 2}],
        "truncated": False}


def test_rate_sums_every_key_of_the_counter_per_minute(api):
    now = time.time()
    minute = int(now // 60)
    post(api, [{"counter": "views", "key": f"k{i}", "value": 2, "ts": now - 120} for i in range(7)]
         + [{"counter": "views", "key": "k0", "ts": now}, {"counter": "likes", "key": "x"}])
    body = api.get("/v1/counters/views/rate?minutes=5", headers=R).json
    assert [p["ts"] // 60 for p in body["points"]] == list(range(minute - 4, minute + 1))
    values = {p["ts"] // 60: p["value"] for p in body["points"]}
    assert values[minute - 2] == 14 and values[minute] == 1 and sum(values.values()) == 15
    assert body["points"][2]["per_second"] == round(14 / 60, 3)


def test_rate_refuses_more_than_an_hour(api):
    answer = api.get("/v1/counters/views/rate?minutes=61", headers=R)
    assert answer.status_code == 400 and "minutes" in answer.json["detail"]


def test_flusher_reports_every_sink_and_the_archiver(api, redis_client):
    post(api, [{"counter": "views", "key": "a"}])
    metrics.record(redis_client, "timescale", now=1_700_000_000.5, duration=0.25, rows=3,
                   error=None)
    metrics.record(redis_client, "timescale", now=1_700_000_010.0, duration=0.5, rows=0,
                   error="down")
    body = api.get("/v1/flusher", headers=R).json
    assert body["event_log"] is True
    sinks = {s["sink"]: s for s in body["sinks"]}
    assert set(sinks) == {"timescale", "influx", "events"}
    assert sinks["timescale"] | {"lag_seconds": None} == {
        "sink": "timescale", "lag_seconds": None, "dirty": 1, "reported": True,
        "last_run": "2023-11-14T22:13:30Z", "last_success": "2023-11-14T22:13:20Z",
        "last_duration_seconds": 0.5, "rows_total": 3, "errors_total": 1}
    assert sinks["timescale"]["lag_seconds"] >= 0
    assert sinks["influx"]["reported"] is False and sinks["influx"]["last_success"] is None
    assert sinks["events"]["dirty"] is None and sinks["events"]["lag_seconds"] >= 0
