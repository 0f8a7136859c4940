"""Range uniques and breakdowns: exact answers from the event log, equal to the accepted events.

A hostile stream (retried ids, many users, user-less events, hostile keys and
property values, events without the property) goes through the real API into
Redis, the archiver moves it into TimescaleDB's `events`, and every answer is
compared with a reference computed here from the events the API accepted,
over ranges crossing hour and day boundaries and a sealed/unsealed one.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

import psycopg
import pytest
import redis
from werkzeug.serving import make_server

from tally.client import Client
from tally.ingest.api import close_app
from tally.ingest.batch.watermark import archived_until
from tally.ingest.counting.config import CountingConfig
from tests.fix_postgres import truncate_counts
from tests.test_api_support import R, W, make_app
from tests.test_event_log import archive_all

HOUR, DAY = 3600, 86400
LATENESS = 3 * DAY  # so the stream can span 50 hours: always across a UTC midnight
KEYS = ["video:1", "a b", "back\\slash", "ключ", "🎬", "{brace}", "x,y=z", "quote'\"", "\\N"]
COUNTRIES = ["DE", "FR", "US", "JP", "ключ", "\"q\" \\N {j}", "🎬"]


def _event(rng: random.Random, now: float, n: int) -> dict:
    event = {"counter": rng.choice(["views", "plays"]), "key": rng.choice(KEYS),
             "ts": int(now) - rng.randrange(50 * HOUR), "value": rng.choice([1, 1, 1, 2, 5])}
    if rng.random() < 0.8:
        event["id"] = f"ev-{n}"
    if rng.random() < 0.85:
        event["user"] = f"user-{rng.randrange(400)}" if rng.random() < 0.95 else "ü\\ser"
    if rng.random() < 0.75:  # the rest has no country: the breakdown's null row
        props = {"country": rng.choices(COUNTRIES, weights=[40, 25, 15, 8, 5, 4, 3])[0]}
        if rng.random() < 0.3:
            props["plan"] = rng.choice(["free", "pro"])
        event["props"] = props
    return event


def _stream(seed: int, now: float, n: int) -> list[dict]:
    """n events, a third of those with an id sent again (duplicates), shuffled."""
    rng = random.Random(seed)
    events = [_event(rng, now, i) for i in range(n)]
    events += [dict(e) for e in events if "id" in e and rng.random() < 0.33]
    rng.shuffle(events)
    return events


def accepted(events: list[dict]) -> list[dict]:
    """The events the API counts: the first of each (counter, key, id), every one without id."""
    seen, kept = set(), []
    for event in events:
        identity = (event["counter"], event["key"], event.get("id"))
        if event.get("id") is not None and identity in seen:
            continue
        seen.add(identity)
        kept.append(event)
    return kept


def _chosen(events, counter, key, start, end):
    return [e for e in events if e["counter"] == counter and (key is None or e["key"] == key)
            and start <= e["ts"] < end]


def expected_uniques(events, counter, key, start, end) -> tuple[int, int, int]:
    chosen = _chosen(events, counter, key, start, end)
    users = {e["user"] for e in chosen if e.get("user") is not None}
    return len(users), sum(e["value"] for e in chosen), len(chosen)


def expected_breakdown(events, counter, key, prop, k, start, end) -> tuple[list, dict]:
    groups: dict = defaultdict(lambda: [0, set()])
    for e in _chosen(events, counter, key, start, end):
        group = groups[(e.get("props") or {}).get(prop)]
        group[0] += e["value"]
        if e.get("user") is not None:
            group[1].add(e["user"])
    order = sorted(groups, key=lambda v: (-groups[v][0], v is None, v or ""))
    top = [{"value": v, "count": groups[v][0], "uniques": len(groups[v][1])} for v in order[:k]]
    rest = order[k:]
    other = {"values": len(rest), "count": sum(groups[v][0] for v in rest),
             "uniques": len(set().union(*(groups[v][1] for v in rest)))}
    return top, other


def _rfc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def logged(redis_url, postgres_dsn, postgres_owner_dsn):
    """The API on the test Redis and TimescaleDB, the hostile stream posted and archived."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    app = make_app(redis_url, postgres_dsn=postgres_dsn, accepted_lateness=LATENESS,
                   rate_limits="api=100000/60", shards=4)
    api, now = app.test_client(), time.time()
    events = _stream(13, now, 3000)
    answers = [api.post("/v1/events", json=events[i:i + 250], headers=W).get_json()
               for i in range(0, len(events), 250)]
    kept = accepted(events)
    assert sum(a["accepted"] for a in answers) == len(kept)
    assert sum(a["duplicates"] for a in answers) == len(events) - len(kept) > 0
    settings = app.extensions["tally"].settings
    archive_all(client, settings)
    yield {"api": api, "app": app, "events": kept, "now": now, "client": client,
           "settings": settings, "owner_dsn": postgres_owner_dsn}
    close_app(app)
    with psycopg.connect(postgres_owner_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM sealed_days")
    truncate_counts(postgres_owner_dsn)
    client.flushall()
    client.close()


def ranges(now: float) -> dict[str, tuple[float, float]]:
    """Ranges over the stream: all of it, across an hour, across midnight, unaligned, empty."""
    midnight = math.floor((now - 26 * HOUR) / DAY) * DAY + DAY  # within the last 50 hours
    hour = math.floor((now - 5 * HOUR) / HOUR) * HOUR
    return {"all": (now - 51 * HOUR, now + 60), "hour": (hour - 1200, hour + 1500),
            "midnight": (midnight - 2 * HOUR, midnight + 3 * HOUR),
            "hours": (hour - 7 * HOUR + 17.25, hour + 0.5),
            "before": (now - 60 * HOUR, now - 55 * HOUR)}


def _get(api, path, **query):
    answer = api.get(path, query_string={k: v for k, v in query.items() if v is not None},
                     headers=R)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def check_all(logged) -> None:
    api, events = logged["api"], logged["events"]
    for name, (start, end) in ranges(logged["now"]).items():
        for counter, key in (("views", None), ("plays", None), ("views", "ключ"),
                             ("plays", "quote'\"")):
            # epoch seconds for some ranges, RFC 3339 for the others: both are accepted
            span = ({"from": start, "to": end} if name != "midnight"
                    else {"from": _rfc(start), "to": _rfc(end)})
            got = _get(api, f"/v1/counters/{counter}/uniques", key=key, **span)
            want = expected_uniques(events, counter, key, start, end)
            assert (got["uniques"], got["count"], got["events"]) == want, (name, counter, key)
            assert got["key"] == key and got["counter"] == counter
            for k in (2, 100):
                got = _get(api, f"/v1/counters/{counter}/breakdown", key=key, by="country",
                           k=k, **span)
                top, other = expected_breakdown(events, counter, key, "country", k, start, end)
                assert (got["rows"], got["other"]) == (top, other), (name, counter, key, k)
    assert expected_uniques(events, "views", None, *ranges(logged["now"])["midnight"])[2] > 50


def test_range_reads_equal_the_reference_across_hours_and_days(logged):
    check_all(logged)


def test_a_sealed_day_changes_no_answer(logged):
    """Sealed days are sealed from the same rows: a range across the sealed/unsealed
    boundary (the midnight range) answers the same."""
    midnight = ranges(logged["now"])["midnight"][0] + 2 * HOUR
    day = datetime.fromtimestamp(midnight - DAY, UTC).date()
    with psycopg.connect(logged["owner_dsn"], autocommit=True) as conn:
        conn.execute("INSERT INTO sealed_days (day, events) VALUES (%s, 0) "
                     "ON CONFLICT DO NOTHING", (day,))
    check_all(logged)


def test_breakdown_counts_every_event_once_and_names_the_missing_property(logged):
    start, end = ranges(logged["now"])["all"]
    got = _get(logged["api"], "/v1/counters/views/breakdown", by="plan", k=1, **{
        "from": start, "to": end})
    total = expected_uniques(logged["events"], "views", None, start, end)
    assert sum(r["count"] for r in got["rows"]) + got["other"]["count"] == total[1]
    assert got["rows"][0]["value"] is None  # most events have no plan: one null row
    assert got["other"] == {**got["other"], "values": 2}
    nothing = _get(logged["api"], "/v1/counters/views/breakdown", by="nope", **{
        "from": start, "to": end})
    assert [r["value"] for r in nothing["rows"]] == [None] and nothing["other"]["count"] == 0


def test_unarchived_tail_is_a_stated_lag(logged):
    """The answers come from `events`: an event still in Redis is not counted, the answer says
    the range is not complete and archived_until is before it; once archived, it counts."""
    api, client, settings = logged["api"], logged["client"], logged["settings"]
    now = time.time()
    body = {"counter": "tail", "key": "k", "user": "late-user", "ts": int(now) - 10,
            "props": {"country": "DE"}}
    span = {"from": now - HOUR, "to": now + 60}
    before = _get(api, "/v1/counters/tail/uniques", **span)
    assert (before["uniques"], before["complete"]) == (0, False)
    assert api.post("/v1/events", json=body, headers=W).get_json()["accepted"] == 1
    posted = time.time()
    lagging = _get(api, "/v1/counters/tail/uniques", **span)
    assert (lagging["uniques"], lagging["events"], lagging["complete"]) == (0, 0, False)
    assert datetime.fromisoformat(lagging["archived_until"]).timestamp() <= posted
    archive_all(client, settings)
    caught_up = _get(api, "/v1/counters/tail/uniques", **span)
    assert (caught_up["uniques"], caught_up["events"]) == (1, 1)
    assert datetime.fromisoformat(caught_up["archived_until"]).timestamp() >= posted - 0.01
    watermark = archived_until(client, CountingConfig.from_settings(settings))
    assert watermark >= posted - 0.01
    rows = _get(api, "/v1/counters/tail/breakdown", by="country", **span)["rows"]
    assert rows == [{"value": "DE", "count": 1, "uniques": 1}]


def test_complete_once_the_range_is_past_the_lateness(logged):
    api, now = logged["api"], time.time()
    old = _get(api, "/v1/counters/views/uniques", **{"from": now - LATENESS - 2 * DAY,
                                                    "to": now - LATENESS - 360})
    assert old["complete"] is True  # past the lateness and the clock skew (300 s)
    skewed = _get(api, "/v1/counters/views/uniques", **{"from": now - LATENESS - DAY,
                                                       "to": now - LATENESS - 60})
    assert skewed["complete"] is False  # past the lateness, not the skew
    recent = _get(api, "/v1/counters/views/uniques", **{"from": now - DAY, "to": now - 60})
    assert recent["complete"] is False
    default = _get(api, "/v1/counters/views/uniques")  # the last 24 hours
    got = datetime.fromisoformat(default["to"]).timestamp() - \
        datetime.fromisoformat(default["from"]).timestamp()
    assert got == DAY


def test_client_reads_uniques_and_breakdown(logged):
    server = make_server("127.0.0.1", 0, logged["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    start, end = ranges(logged["now"])["midnight"]
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", "w-token",
                        read_token="r-token")
        got = client.uniques("views", start=start, end=end)
        assert got["uniques"] == expected_uniques(logged["events"], "views", None, start, end)[0]
        got = client.breakdown("views", "country", key="🎬", k=3, start=start, end=end)
        assert (got["rows"], got["other"]) == expected_breakdown(
            logged["events"], "views", "🎬", "country", 3, start, end)
        client.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


BAD = [
    ("uniques?from=yesterday", "from must be RFC 3339"),
    ("uniques?to=99999999999999", "to must be RFC 3339 with a time zone"),
    ("uniques?to=253402214401", "to must be between 1970-01-01 and 9999-12-31"),
    ("uniques?from=100&to=100", "from must be earlier than to"),
    ("uniques?from=0&to=3024001", "longer than the event log keeps (TALLY_EVENTS_RETENTION"),
    ("uniques?key=", "key "),
    ("uniques?key=a&key=b", "key must be given once"),
    ("uniques?key=a%00b", "key "),
    ("uniques?keys=a", "unknown query parameter(s): 'keys'"),
    ("breakdown", "by is required"),
    ("breakdown?by=Country", "by must match [a-z0-9_]{1,64}"),
    ("breakdown?by=country&k=0", "k must be between 1 and 100"),
    ("breakdown?by=country&k=101", "k must be between 1 and 100"),
    ("breakdown?by=country&k=ten", "k must be an integer between 1 and 100"),
    ("breakdown?by=a&by=b", "by must be given once"),
]


@pytest.mark.parametrize(("query", "detail"), BAD)
def test_bad_parameters_are_precise_400s(logged, query, detail):
    answer = logged["api"].get(f"/v1/counters/views/{query}", headers=R)
    assert answer.status_code == 400, answer.get_json()
    assert detail in answer.get_json()["detail"], answer.get_json()


def test_bad_counter_in_the_path_is_a_400(logged):
    for path in ("/v1/counters/Views/uniques", "/v1/counters/v%20w/breakdown?by=x"):
        answer = logged["api"].get(path, headers=R)
        assert answer.status_code == 400 and answer.get_json()["detail"].startswith("counter")


def test_reads_need_a_read_token(logged):
    assert logged["api"].get("/v1/counters/views/uniques").status_code == 401
    assert logged["api"].get("/v1/counters/views/uniques", headers=W).status_code == 403


@pytest.mark.parametrize("dsn", ["", "postgresql://tally_app@127.0.0.1:1/tally"])
def test_no_database_is_a_503_with_retry_after(redis_url, redis_client, dsn):
    app = make_app(redis_url, postgres_dsn=dsn)
    try:
        answer = app.test_client().get("/v1/counters/views/breakdown?by=country", headers=R)
    finally:
        close_app(app)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "10"
    assert answer.get_json()["type"] == "urn:tally:problem:event-log-unavailable"


def test_a_read_past_the_timeout_is_a_503(redis_url, redis_client, pg_dsn, postgres_owner_dsn):
    """A read waiting longer than TALLY_RANGE_READ_TIMEOUT (here on a table lock) is cancelled."""
    app = make_app(redis_url, postgres_dsn=pg_dsn, range_read_timeout=0.5)
    try:
        with psycopg.connect(postgres_owner_dsn) as locker:
            locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            answer = app.test_client().get("/v1/counters/views/uniques", headers=R)
            locker.rollback()
    finally:
        close_app(app)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "10"
    body = answer.get_json()
    assert body["type"] == "urn:tally:problem:range-read-timeout"
    assert "TALLY_RANGE_READ_TIMEOUT (0.5 s)" in body["detail"]


def test_redis_down_is_a_503(pg_dsn):
    """The watermark comes from Redis: without it no answer can say what it covers."""
    app = make_app("redis://127.0.0.1:1/0", postgres_dsn=pg_dsn)
    try:
        answer = app.test_client().get("/v1/counters/views/uniques", headers=R)
    finally:
        close_app(app)
    assert answer.status_code == 503
    assert answer.get_json()["type"] == "urn:tally:problem:redis-unavailable"
