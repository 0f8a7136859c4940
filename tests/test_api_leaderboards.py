"""Leaderboards over HTTP: set, increment, top, member, around, remove, bounded boards."""

from __future__ import annotations

import pytest

from tally import keys
from tally.ingest.api import close_app
from tests.test_api_support import R, W, make_app


def put(api, member, score, board="game", **query):
    """Set a score; return the JSON answer."""
    return api.put(f"/v1/leaderboards/{board}/scores", json={"member": member, "score": score},
                   headers=W, query_string=query).json


def test_set_increment_top_member_around_remove(api):
    assert put(api, "ann", 10) == {"kept": True, "rank": 1, "member": "ann", "score": 10.0}
    api.post("/v1/leaderboards/game/scores", json={"member": "bob", "score": 5}, headers=W)
    put(api, "cy", 7)
    bumped = api.post("/v1/leaderboards/game/increments", json={"member": "bob", "delta": 6},
                      headers=W).json
    assert bumped == {"kept": True, "rank": 1, "member": "bob", "score": 11.0}
    top = api.get("/v1/leaderboards/game/top?k=2", headers=R).json
    assert top == {"board": "game", "size": 3, "entries": [
        {"rank": 1, "member": "bob", "score": 11.0}, {"rank": 2, "member": "ann", "score": 10.0}]}
    member = api.get("/v1/leaderboards/game/member?member=cy", headers=R).json
    assert member == {"rank": 3, "member": "cy", "score": 7.0}
    around = api.get("/v1/leaderboards/game/around?member=cy&radius=1", headers=R).json
    assert [e["member"] for e in around["entries"]] == ["ann", "cy"]
    removed = api.delete("/v1/leaderboards/game/member?member=ann", headers=W)
    assert removed.json == {"removed": True, "member": "ann"}
    gone = api.delete("/v1/leaderboards/game/member", json={"member": "bob"}, headers=W)
    assert gone.status_code == 200
    assert api.get("/v1/leaderboards/game/top", headers=R).json["size"] == 1


def test_absent_member_is_404(api):
    for url in ("/v1/leaderboards/game/member?member=x", "/v1/leaderboards/game/around?member=x"):
        response = api.get(url, headers=R)
        assert (response.status_code, response.json["detail"]) == (
            404, "'x' is not on leaderboard 'game'")
    assert api.delete("/v1/leaderboards/game/member?member=x", headers=W).status_code == 404


def test_bounded_board_keeps_the_best(api):
    put(api, "a", 3, capacity=2)
    put(api, "b", 2, capacity=2)
    assert put(api, "c", 1, capacity=2) == {"kept": False, "member": "c", "rank": None,
                                            "score": None}
    assert put(api, "d", 9, capacity=2)["rank"] == 1
    top = api.get("/v1/leaderboards/game/top", headers=R).json
    assert [e["member"] for e in top["entries"]] == ["d", "a"]


def test_capacity_setting_is_the_default_bound(redis_url, redis_client):
    app = make_app(redis_url, leaderboard_capacity=1)
    api = app.test_client()
    put(api, "a", 3)
    assert put(api, "b", 1)["kept"] is False
    close_app(app)


@pytest.mark.parametrize(("board", "body", "detail"), [
    ("game", {"member": "a"}, "score must be a number"),
    ("game", {"member": "a", "score": True}, "score must be a number"),
    ("game", {"member": "a", "score": 2**53}, "score must be between -(2^53 - 1) and 2^53 - 1"),
    ("game", {"member": "a", "score": 10**400},
     "body contains an integer of 401 digits; at most 308 are accepted"),
    ("game", {"score": 1}, "member is required"),
    ("game", {"member": "a", "score": 1, "rank": 2}, "unknown field(s): rank"),
    ("bad board", {"member": "a", "score": 1}, "board must match [A-Za-z0-9_.:-]{1,64}"),
])
def test_bad_writes_are_400(api, board, body, detail):
    response = api.put(f"/v1/leaderboards/{board}/scores", json=body, headers=W)
    assert (response.status_code, response.json["detail"]) == (400, detail)


def test_integer_past_python_int_parsing_limit_is_400(api):
    data = b'{"member": "a", "score": ' + b"9" * 5000 + b"}"
    response = api.put("/v1/leaderboards/game/scores", data=data,
                       headers={**W, "Content-Type": "application/json"})
    assert (response.status_code, response.json["detail"]) == (
        400, "body contains an integer of 5000 digits; at most 308 are accepted")


def test_increment_past_2_53_is_a_400_naming_delta(api):
    put(api, "ann", 2**53 - 1)
    response = api.post("/v1/leaderboards/game/increments", json={"member": "ann", "delta": 1},
                        headers=W)
    assert response.status_code == 400
    assert response.json["errors"] == [{"index": None, "field": "delta",
                                        "message": "the resulting score must stay below 2^53 in "
                                                   "magnitude"}]
    assert api.get("/v1/leaderboards/game/member", query_string={"member": "ann"},
                   headers=R).json["score"] == 2**53 - 1


def increment(api, delta, key=None, member="ann", board="game"):
    """POST an increment, with an Idempotency-Key when given; return the response."""
    headers = W if key is None else {**W, "Idempotency-Key": key}
    return api.post(f"/v1/leaderboards/{board}/increments",
                    json={"member": member, "delta": delta}, headers=headers)


def test_an_increment_repeated_with_its_idempotency_key_applies_once(api):
    """The repeat answers what the first answered, even after the board moved on."""
    first = increment(api, 5, key="8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert first.json == {"kept": True, "rank": 1, "member": "ann", "score": 5.0}
    put(api, "bob", 9)
    again = increment(api, 5, key="8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert (again.status_code, again.json) == (200, first.json)
    assert api.get("/v1/leaderboards/game/member?member=ann", headers=R).json["score"] == 5.0
    assert increment(api, 5).json["score"] == 10.0  # no key: every call counts


def test_an_idempotency_key_is_remembered_for_the_dedup_window(api, redis_client):
    increment(api, 1, key='"quoted-form"')
    record = keys.leaderboard_idempotency_key("game", "quoted-form")
    assert 86_390 < redis_client.ttl(record) <= 86_400
    assert increment(api, 1, key="quoted-form").json["score"] == 1.0  # the same key


def test_an_idempotency_key_reused_for_another_request_is_422(api):
    increment(api, 1, key="k1")
    reused = increment(api, 2, key="k1")
    assert (reused.status_code, reused.json["type"]) == (
        422, "urn:tally:problem:idempotency-key-reused")
    assert api.get("/v1/leaderboards/game/member?member=ann", headers=R).json["score"] == 1.0
    assert increment(api, 2, key="k1", board="other").status_code == 200  # keys are per board


@pytest.mark.parametrize("value", ["", "a b", 'a"b', "a\\b", '"open', "x" * 256, "\t"])
def test_a_malformed_idempotency_key_is_400_and_changes_nothing(api, value):
    response = increment(api, 1, key=value)
    assert (response.status_code, response.json["type"]) == (
        400, "urn:tally:problem:invalid-header")
    assert response.json["detail"].startswith("Idempotency-Key must be 1 to 255 printable ASCII")
    assert api.get("/v1/leaderboards/game/top", headers=R).json["size"] == 0


def test_a_repeated_idempotency_key_header_is_400(api):
    response = api.post("/v1/leaderboards/game/increments", json={"member": "a", "delta": 1},
                        headers=[*W.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
    assert (response.status_code, response.json["detail"]) == (
        400, "Idempotency-Key must be given once")
