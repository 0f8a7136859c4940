"""The serving merge: sealed days from the database alone, the rest the larger of Redis and it.

One scenario over five UTC days, D-4 … D (today), with D-4 and D-3 sealed:

- D-4: database rows only (Redis has long expired it): 9 counted, 4 users.
- D-3 (sealed): Redis counted 7 (at S-7200 and S-60), the batch layer's
  exact rows say 3 (2 users) at S-60 and nothing at S-7200, where
  S is the start of D-2. The sealed answer is the database's.
- D-2 (unsealed): Redis counted 4 at S and 6 at S+60, and the minute S+60
  has expired from Redis (its minute hash and HyperLogLog are gone); the
  database holds a flusher's stale copy (1 at S, 7 in the hour and day) and
  the minute S+60 (6, 3 users). Each bucket is the larger of the two.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tally import keys
from tally.ingest.api import close_app
from tally.ingest.api.params import rfc3339
from tests.test_api_support import R, W, make_app

DAY, HOUR = 86400, 3600
TODAY = int(time.time()) // DAY * DAY
S = TODAY - 2 * DAY  # the first unsealed day starts here
SEALED = (TODAY - 4 * DAY, TODAY - 3 * DAY)
ROWS = {  # table -> [(bucket, key, value, uniques)]: what the batch layer and flusher wrote
    "counts_1m": [(SEALED[0] + 5 * HOUR, "k", 9, 4), (S - 60, "k", 3, 2), (S, "k", 1, 1),
                  (S + 60, "k", 6, 3)],
    "counts_1h": [(SEALED[0] + 5 * HOUR, "k", 9, 4), (S - HOUR, "k", 3, 2), (S, "k", 7, 3)],
    "counts_1d": [(SEALED[0], "k", 9, 4), (SEALED[1], "k", 3, 2), (SEALED[1], "j", 5, 5),
                  (SEALED[1], "n", 1, None), (S, "k", 7, 3)],  # n: no event had a user
}


def events(ts: int, value: int, users: list[str]) -> list[dict]:
    """One event per user, each counting `value`."""
    return [{"counter": "views", "key": "k", "ts": ts, "value": value, "user": u} for u in users]


def expire_minute(client, index: int) -> None:
    """Drop one minute of key k from Redis, as its TTL would (hash and HyperLogLog)."""
    for shard in range(16):
        names = keys.shard_keys("views", shard)
        client.delete(names.bucket("m", index), names.hll("m", index, "k"))


@pytest.fixture
def merged(redis_url, redis_client, pg_conn, pg_dsn):
    """A test client of an app reading history, with the scenario in Redis and the database."""
    app = make_app(redis_url, series_history=True, postgres_dsn=pg_dsn,
                   accepted_lateness=5 * DAY)
    api = app.test_client()
    posted = (events(S - 7200, 2, ["u1"]) + events(S - 60, 5, ["u1"])
              + events(S, 2, ["u1", "u2"]) + events(S + 60, 2, ["u4", "u5", "u6"]))
    response = api.post("/v1/events", json=posted, headers=W)
    assert response.status_code == 200, response.json
    expire_minute(redis_client, (S + 60) // 60)
    for table, rows in ROWS.items():
        for bucket, key, value, uniques in rows:
            pg_conn.execute(f"INSERT INTO {table} (bucket, counter, key, value, uniques) "
                            "VALUES (%s, 'views', %s, %s, %s)",
                            (datetime.fromtimestamp(bucket, UTC), key, value, uniques))
    pg_conn.execute("DELETE FROM sealed_days")  # only this scenario's days are sealed
    for day in SEALED:
        pg_conn.execute("INSERT INTO sealed_days (day, events) VALUES (%s, 0)",
                        (datetime.fromtimestamp(day, UTC).date(),))
    yield api
    pg_conn.execute("DELETE FROM sealed_days")
    close_app(app)


def series(api, step: str, start: int, end: int, key: str = "k") -> dict:
    """The series of a key as {ts: (value, uniques, sealed)}, checking history is the database."""
    body = api.get("/v1/counters/views/series", headers=R, query_string={
        "key": key, "step": step, "from": rfc3339(start), "to": rfc3339(end)}).json
    assert body["history"] == "timescale"
    return {p["ts"]: (p["value"], p["uniques"], p["sealed"]) for p in body["points"]}


def test_minutes_across_the_sealed_boundary(merged):
    points = series(merged, "1m", S - 7200, S + 120)
    assert points[S - 7200] == (0, 0, True)  # Redis counted 2; the batch layer found nothing
    assert points[S - 60] == (3, 2, True)  # exact, not Redis' 5 and 1 user
    assert points[S] == (4, 2, False)  # Redis beats the stale row (1)
    assert points[S + 60] == (6, 3, False)  # expired from Redis: the database's row
    assert len(points) == 122 and sum(v for v, _, _ in points.values()) == 13
    assert all(sealed == (ts < S) for ts, (_, _, sealed) in points.items())


def test_hours_across_the_sealed_boundary(merged):
    points = series(merged, "1h", S - 2 * HOUR, S + 2 * HOUR)
    assert points == {S - 2 * HOUR: (0, 0, True), S - HOUR: (3, 2, True),
                      S: (10, 5, False), S + HOUR: (0, 0, False)}


def test_days_sealed_then_unsealed(merged):
    points = series(merged, "1d", SEALED[0], TODAY + DAY)
    assert points == {SEALED[0]: (9, 4, True), SEALED[1]: (3, 2, True),
                      S: (10, 5, False), S + DAY: (0, 0, False), TODAY: (0, 0, False)}


def test_a_sealed_row_without_users_has_no_uniques(merged):
    assert series(merged, "1d", SEALED[1], S, key="n")[SEALED[1]] == (1, 0, True)


def test_each_resolution_counts_every_event_once(merged):
    """Minutes, hours and days of the same span add up to the same total."""
    sums = {step: sum(v for v, _, _ in series(merged, step, SEALED[0], TODAY + DAY).values())
            for step in ("1m", "1h", "1d")}
    assert sums == {"1m": 22, "1h": 22, "1d": 22}


def test_all_time_total_stays_redis(merged):
    body = merged.get("/v1/counters/views", headers=R, query_string={"key": "k"}).json
    assert body["total"] == 2 + 5 + 4 + 6  # every event Redis counted, sealed days included


def test_top_of_a_sealed_date_is_the_database_s(merged):
    def top(day: int) -> dict:
        date = rfc3339(day)[:10]
        return merged.get(f"/v1/counters/views/top?date={date}", headers=R).json

    sealed, unsealed = top(SEALED[1]), top(S)
    assert sealed["sealed"] and [(r["key"], r["count"]) for r in sealed["top"]] == [
        ("j", 5), ("k", 3), ("n", 1)]
    assert not unsealed["sealed"]
    assert [(r["key"], r["count"]) for r in unsealed["top"]] == [("k", 10)]


def test_database_down_answers_redis_alone_and_marks_nothing_sealed(redis_url, merged):
    app = make_app(redis_url, series_history=True, accepted_lateness=5 * DAY,
                   postgres_dsn="postgresql://tally_app@127.0.0.1:1/tally")
    body = app.test_client().get("/v1/counters/views/series", headers=R, query_string={
        "key": "k", "step": "1d", "from": str(SEALED[1]), "to": str(S + DAY)}).json
    assert body["history"] == "unavailable"
    assert [(p["value"], p["sealed"]) for p in body["points"]] == [(7, False), (10, False)]
    top = app.test_client().get(f"/v1/counters/views/top?date={rfc3339(SEALED[1])[:10]}",
                                headers=R).json
    assert (top["sealed"], top["top"]) == (False, [{"rank": 1, "key": "k", "count": 7}])
    close_app(app)

