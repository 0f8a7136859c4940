"""POST /v1/ratelimit/<limit>: allowed, 429 with Retry-After, unknown limits, bad bodies."""

from __future__ import annotations

import pytest

from tally.errors import ConfigError
from tally.ingest.api.ratelimits import Limit, parse_limits
from tests.test_api_support import W


def test_allows_up_to_the_limit_then_429(api):
    answers = [api.post("/v1/ratelimit/api", json={"subject": "ip:1"}, headers=W)
               for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.json["remaining"] for a in answers] == [2, 1, 0, 0]
    denied = answers[-1]
    assert denied.json["allowed"] is False
    assert 59 < denied.json["reset_after"] <= 60
    assert denied.headers["Retry-After"] == "60"


def test_subjects_are_independent(api):
    api.post("/v1/ratelimit/login", json={"subject": "a"}, headers=W)
    assert api.post("/v1/ratelimit/login", json={"subject": "b"}, headers=W).status_code == 200
    assert api.post("/v1/ratelimit/login", json={"subject": "a"}, headers=W).status_code == 429


def test_unknown_limit_is_404(api):
    response = api.post("/v1/ratelimit/nope", json={"subject": "a"}, headers=W)
    assert response.status_code == 404
    assert response.json["type"] == "urn:tally:problem:unknown-limit"


@pytest.mark.parametrize(("body", "detail"), [
    ({}, "subject is required"),
    ({"subject": 5}, "subject must be a string"),
    ({"subject": "a", "x": 1}, "the body takes only a subject"),
    ([], "body must be a JSON object"),
])
def test_bad_bodies_are_400(api, body, detail):
    response = api.post("/v1/ratelimit/api", json=body, headers=W)
    assert (response.status_code, response.json["detail"]) == (400, detail)


def test_parse_limits():
    assert parse_limits("api=100/60, login=5/0.5") == {"api": Limit(100, 60.0),
                                                        "login": Limit(5, 0.5)}
    with pytest.raises(ConfigError, match="'api=0/60'"):
        parse_limits("api=0/60")
