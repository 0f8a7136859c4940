"""Bearer tokens: 401 without or with a wrong token, 403 with the wrong scope, open probes."""

from __future__ import annotations

import logging

import pytest

from tally.errors import ConfigError
from tally.ingest.api import close_app, create_app
from tests.test_api_support import READ, WRITE, R, W, make_app, settings

EVENT = {"counter": "views", "key": "k"}


@pytest.mark.parametrize(("headers", "challenge"), [
    ({}, 'Bearer realm="tally"'),
    ({"Authorization": "Bearer nope"}, 'Bearer realm="tally", error="invalid_token"'),
    ({"Authorization": f"Basic {WRITE}"}, 'Bearer realm="tally", error="invalid_request"'),
    ({"Authorization": "Bearer "}, 'Bearer realm="tally", error="invalid_request"'),
])
def test_missing_or_invalid_token_is_401(api, headers, challenge):
    response = api.post("/v1/events", json=EVENT, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.json["type"] == "urn:tally:problem:unauthorized"


@pytest.mark.parametrize(("method", "url", "token", "scope"), [
    ("post", "/v1/events", READ, "write"),
    ("get", "/v1/counters/views?key=k", WRITE, "read"),
    ("put", "/v1/leaderboards/b/scores", READ, "write"),
    ("get", "/v1/leaderboards/b/top", WRITE, "read"),
    ("post", "/v1/ratelimit/api", READ, "write"),
])
def test_wrong_scope_is_403(api, method, url, token, scope):
    response = getattr(api, method)(url, json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json["detail"] == f"this token lacks the {scope!r} scope"


def test_right_scopes_pass(api):
    assert api.post("/v1/events", json=EVENT, headers=W).status_code == 200
    assert api.get("/v1/counters/views?key=k", headers=R).json["total"] == 1


@pytest.mark.parametrize("url", ["/healthz", "/readyz", "/openapi.json", "/metrics"])
def test_probes_and_docs_are_open(api, url):
    assert api.get(url).status_code == 200


def test_token_in_both_lists_has_both_scopes(redis_url, redis_client):
    app = make_app(redis_url, write_tokens=("both",), read_tokens=("both", READ))
    api = app.test_client()
    headers = {"Authorization": "Bearer both"}
    assert api.post("/v1/events", json=EVENT, headers=headers).status_code == 200
    assert api.get("/v1/counters/views?key=k", headers=headers).status_code == 200
    close_app(app)


def test_refuses_to_start_without_tokens(redis_url):
    with pytest.raises(ConfigError, match="--insecure-no-auth"):
        create_app(settings(redis_url, write_tokens=(), read_tokens=()))


def test_insecure_mode_is_open_and_warns(redis_url, redis_client, caplog):
    with caplog.at_level(logging.WARNING, "tally.ingest"):
        app = make_app(redis_url, write_tokens=(), read_tokens=(), insecure_no_auth=True)
    assert "WITHOUT authentication" in caplog.text
    api = app.test_client()
    assert api.post("/v1/events", json=EVENT).status_code == 200
    assert api.get("/v1/counters/views?key=k").json["total"] == 1
    close_app(app)
