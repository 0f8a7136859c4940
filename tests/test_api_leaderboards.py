"""Leaderboards over HTTP: set, increment, top, member, around, remove, bounded boards."""

from __future__ import annotations

import pytest

from ingest.api import close_app
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
