"""GET /v1/counters/…: a key's counts, its series (Redis alone and merged with TimescaleDB), top."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tally.ingest.api import close_app
from tally.ingest.api.params import rfc3339
from tests.test_api_support import R, W, make_app

NOW = int(time.time())
MINUTE = NOW // 60 * 60
YESTERDAY = NOW // 86400 * 86400 - 1  # last second of the previous UTC day


def post(api, events):
    """Post events with the write token; return the JSON answer."""
    response = api.post("/v1/events", json=events, headers=W)
    assert response.status_code == 200, response.json
    return response.json


def test_counts_of_a_key(api):
    post(api, [{"counter": "views", "key": "a/b?c", "user": u, "id": f"{u}{i}", "value": 2}
               for u in ("u1", "u2") for i in range(2)])
    body = api.get("/v1/counters/views", query_string={"key": "a/b?c"}, headers=R).json
    assert body == {"counter": "views", "key": "a/b?c", "total": 8,
                    "unique_views": {"today": 2, "all_time": 2},
                    "uniques": {"hour": 2, "day": 2}}


@pytest.mark.parametrize(("url", "detail"), [
    ("/v1/counters/views", "key is required"),
    ("/v1/counters/views?key=", "key must not be empty"),
    ("/v1/counters/Views?key=a", "counter must match [a-z0-9_]{1,64}"),
    ("/v1/counters/views/top?k=0", "k must be between 1 and 1000"),
    ("/v1/counters/views/top?k=x", "k must be an integer between 1 and 1000"),
    ("/v1/counters/views/top?window=week", "window must be one of day, all"),
    ("/v1/counters/views/top?date=2026-02-30", "date is not a valid date"),
    ("/v1/counters/views/top?window=all&date=a", "date applies only to window=day"),
    ("/v1/counters/views/series?key=a&step=5m", "step must be one of 1m, 1h, 1d"),
    ("/v1/counters/views/series?key=a&from=yesterday",
     "from must be RFC 3339 with a time zone, e.g. 2026-11-28T10:15:03Z (or epoch seconds)"),
    ("/v1/counters/views/series?key=a&from=100&to=50", "from must be earlier than to"),
    ("/v1/counters/views/series?key=a&from=0&to=700000",
     "from-to spans 700000 s, longer than 10080 steps of 1m (604800 s) per request: narrow "
     "from/to or use a coarser step"),
    ("/v1/counters/views/series?key=a&from=30&to=604830.5",
     "from-to spans 604800.5 s, longer than 10080 steps of 1m (604800 s) per request: narrow "
     "from/to or use a coarser step"),
    ("/v1/counters/views/series?key=a&step=1h&from=0&to=36288000.001",
     "from-to spans 36288000.001 s, longer than 10080 steps of 1h (36288000 s) per request: "
     "narrow from/to or use a coarser step"),
    ("/v1/counters/views/top?k=1&k=2000", "k must be given once"),
    ("/v1/counters/views/top?date=2026-01-01&date=x", "date must be given once"),
    ("/v1/counters/views/top?window=day&window=all", "window must be given once"),
    ("/v1/counters/views/series?key=a&step=1m&step=1d", "step must be given once"),
    ("/v1/counters/views/series?key=a&to=100&to=200", "to must be given once"),
    ("/v1/counters/views/top?k=%D9%A1", "k must be an integer between 1 and 1000"),
    ("/v1/counters/views/series?key=a&from=%D9%A1%D9%A1",
     "from must be RFC 3339 with a time zone, e.g. 2026-11-28T10:15:03Z (or epoch seconds)"),
    ("/v1/counters/views?key=%FF", "query string is not valid UTF-8 once percent-decoded "
     "(byte 4)"),
    ("/v1/counters/views?key=%ED%A0%80", "query string is not valid UTF-8 once percent-decoded "
     "(byte 4)"),
    ("/v1/counters/views/series?key=a&step=1d&to=9999-12-31T23:59:59Z",
     "to must be between 1970-01-01 and 9999-12-31T00:00:00Z"),
])
def test_bad_parameters_are_precise_400s(api, url, detail):
    response = api.get(url, headers=R)
    assert (response.status_code, response.json["detail"]) == (400, detail)


@pytest.mark.parametrize(("start", "points"), [(MINUTE - 7 * 86400, 10_080),
                                               (MINUTE - 7 * 86400 + 30, 10_081),
                                               (NOW - 7 * 86400 + 0.25, 10_081)])
def test_a_week_of_minutes_is_one_request_aligned_or_not(api, start, points):
    """The limit is on to - from: an unaligned week touches 10,081 minutes and is allowed."""
    post(api, [{"counter": "views", "key": "w", "value": 3, "ts": NOW - 60}])
    response = api.get("/v1/counters/views/series", headers=R, query_string={
        "key": "w", "from": str(start), "to": str(start + 7 * 86400)})
    assert response.status_code == 200, response.json
    series = response.json["points"]
    assert len(series) == points
    assert series[0]["ts"] == int(start) // 60 * 60
    assert sum(p["value"] for p in series) == 3


@pytest.mark.parametrize("step", ["1m", "1h", "1d"])
def test_series_up_to_the_latest_accepted_time(api, step):
    response = api.get(f"/v1/counters/views/series?key=a&step={step}&to=253402214400", headers=R)
    assert (response.status_code, response.json["to"]) == (200, "9999-12-31T00:00:00Z")


def test_top_today_on_a_date_and_all_time(api):
    post(api, [{"counter": "plays", "key": k, "value": v} for k, v in (("a", 3), ("b", 5))])
    post(api, [{"counter": "plays", "key": "c", "value": 4, "ts": YESTERDAY}])
    today = api.get("/v1/counters/plays/top?k=2", headers=R).json
    assert today["top"] == [{"rank": 1, "key": "b", "count": 5},
                            {"rank": 2, "key": "a", "count": 3}]
    yesterday = rfc3339(YESTERDAY)[:10]
    past = api.get(f"/v1/counters/plays/top?date={yesterday}", headers=R).json
    assert (past["date"], past["top"]) == (yesterday, [{"rank": 1, "key": "c", "count": 4}])
    every = api.get("/v1/counters/plays/top?window=all", headers=R).json
    assert [row["key"] for row in every["top"]] == ["b", "c", "a"]
    assert every["date"] is None


def test_series_from_redis_alone(api):
    post(api, [{"counter": "views", "key": "k", "ts": MINUTE - 120, "value": 2},
               {"counter": "views", "key": "k", "ts": MINUTE}])
    body = api.get("/v1/counters/views/series", headers=R, query_string={
        "key": "k", "from": rfc3339(MINUTE - 180), "to": str(MINUTE + 60)}).json
    assert body["history"] == "disabled"
    assert [(p["ts"], p["value"]) for p in body["points"]] == [
        (MINUTE - 180, 0), (MINUTE - 120, 2), (MINUTE - 60, 0), (MINUTE, 1)]
    assert body["points"][0]["time"] == rfc3339(MINUTE - 180)


def test_series_default_range_is_the_last_hour_by_minute(api):
    body = api.get("/v1/counters/views/series?key=k", headers=R).json
    assert len(body["points"]) in (60, 61)
    assert body["step"] == "1m"


def test_series_merges_timescale_rows_without_double_counting(redis_url, redis_client, pg_conn,
                                                              postgres_dsn):
    app = make_app(redis_url, series_history=True, postgres_dsn=postgres_dsn)
    api = app.test_client()
    old, both, db_only_larger = MINUTE - 7200, MINUTE - 60, MINUTE
    post(api, [{"counter": "views", "key": "k", "ts": both, "value": 5},
               {"counter": "views", "key": "k", "ts": db_only_larger, "value": 1}])
    for bucket, value in ((old, 7), (both, 3), (db_only_larger, 4)):
        pg_conn.execute("INSERT INTO counts_1m (bucket, counter, key, value, uniques) "
                        "VALUES (%s, 'views', 'k', %s, 0)",
                        (datetime.fromtimestamp(bucket, UTC), value))
    body = api.get("/v1/counters/views/series", headers=R, query_string={
        "key": "k", "from": str(old), "to": str(MINUTE + 60)}).json
    values = {p["ts"]: p["value"] for p in body["points"]}
    assert body["history"] == "timescale"
    assert (values[old], values[both], values[db_only_larger]) == (7, 5, 4)
    assert sum(values.values()) == 16
    close_app(app)


def test_series_answers_from_redis_when_the_database_is_down(api, redis_url, redis_client):
    app = make_app(redis_url, series_history=True,
                   postgres_dsn="postgresql://tally@127.0.0.1:1/tally")
    post(app.test_client(), [{"counter": "views", "key": "k", "ts": MINUTE}])
    body = app.test_client().get("/v1/counters/views/series", headers=R, query_string={
        "key": "k", "from": str(MINUTE), "to": str(MINUTE + 60)}).json
    assert body["history"] == "unavailable"
    assert [(p["ts"], p["value"]) for p in body["points"]] == [(MINUTE, 1)]
    close_app(app)


def test_series_uniques_per_bucket(api):
    post(api, [{"counter": "views", "key": "k", "ts": MINUTE - 60, "user": u} for u in "abc"]
         + [{"counter": "views", "key": "k", "ts": MINUTE, "user": "a"}])
    body = api.get("/v1/counters/views/series", headers=R, query_string={
        "key": "k", "from": str(MINUTE - 120), "to": str(MINUTE + 60)}).json
    assert [(p["value"], p["uniques"], p["sealed"]) for p in body["points"]] == [
        (0, 0, False), (3, 3, False), (1, 1, False)]


def test_series_uniques_of_a_hot_key_spread_over_cluster_slots(redis_cluster_url,
                                                               redis_cluster_client):
    app = make_app(redis_cluster_url, redis_cluster=True, hot_keys="views=h=4")
    api = app.test_client()
    post(api, [{"counter": "views", "key": "h", "ts": MINUTE - 60, "user": f"u{i}"}
               for i in range(20)] + [{"counter": "views", "key": "h", "ts": MINUTE, "user": "x"}])
    body = api.get("/v1/counters/views/series", headers=R, query_string={
        "key": "h", "from": str(MINUTE - 120), "to": str(MINUTE + 60)}).json
    assert [(p["value"], p["uniques"]) for p in body["points"]] == [(0, 0), (20, 20), (1, 1)]
    assert not [name for name in redis_cluster_client.keys("*") if b"tmp:" in name]
    close_app(app)


def test_post_and_read_on_a_redis_cluster(redis_cluster_url, redis_cluster_client):
    app = make_app(redis_cluster_url, redis_cluster=True)
    api = app.test_client()
    batch = [{"counter": "views", "key": f"k{i % 4}", "id": f"c{i}", "user": "u"}
             for i in range(40)]
    assert post(api, batch + batch[:5]) == {"accepted": 40, "duplicates": 5}
    assert api.get("/v1/counters/views?key=k1", headers=R).json["total"] == 10
    top = api.get("/v1/counters/views/top?k=1&window=all", headers=R).json["top"]
    assert top == [{"rank": 1, "key": "k0", "count": 10}]
    assert api.get("/readyz").status_code == 200
    close_app(app)

