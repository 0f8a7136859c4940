"""Probes, the OpenAPI document, metrics, access log lines and generic HTTP errors."""

from __future__ import annotations

import json
import logging

from tally.ingest.api import close_app
from tally.ingest.api.openapi import document
from tally.logs import JsonLines
from tally.stack.process import free_ports
from tests.test_api_support import R, W, make_app


def test_healthz_and_readyz(api):
    assert api.get("/healthz").json == {"status": "ok"}
    assert api.get("/readyz").json == {"status": "ready"}


def test_readyz_is_503_when_redis_is_down():
    app = make_app(f"redis://127.0.0.1:{free_ports(1)[0]}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["type"] == "urn:tally:problem:not-ready"
    close_app(app)


def test_redis_down_on_a_write_is_503_with_retry_after():
    app = make_app(f"redis://127.0.0.1:{free_ports(1)[0]}/0")
    response = app.test_client().post("/v1/events", json={"counter": "a", "key": "b"}, headers=W)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
    close_app(app)


def test_openapi_document_is_served_as_is(api):
    body = api.get("/openapi.json").json
    assert body == json.loads(json.dumps(document()))
    assert body["openapi"] == "3.1.0"


def test_unknown_route_and_method_are_problems(api):
    missing = api.get("/v1/nothing")
    assert (missing.status_code, missing.mimetype) == (404, "application/problem+json")
    wrong = api.get("/v1/events")
    assert wrong.status_code == 405
    assert set(wrong.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_metrics_count_requests_and_event_outcomes(api):
    api.post("/v1/events", json=[{"counter": "v", "key": "k", "id": "1"}] * 2, headers=W)
    api.post("/v1/events", json=[{"counter": "v"}] * 3, headers=W)
    api.get("/v1/counters/v?key=k", headers=R)
    text = api.get("/metrics").data.decode()
    for line in ['tally_ingest_events_total{outcome="accepted"} 1.0',
                 'tally_ingest_events_total{outcome="duplicate"} 1.0',
                 'tally_ingest_events_total{outcome="rejected"} 3.0',
                 'tally_ingest_http_requests_total{method="POST",route="/v1/events",status="200"}'
                 ' 1.0',
                 'tally_ingest_http_requests_total{method="POST",route="/v1/events",status="400"}'
                 ' 1.0',
                 'tally_ingest_http_request_duration_seconds_count{method="GET",'
                 'route="/v1/counters/<counter>"} 1.0']:
        assert line in text.splitlines()


def test_one_json_access_line_per_request(api, caplog):
    with caplog.at_level(logging.INFO, "tally.ingest.access"):
        api.post("/v1/events", json={"counter": "v", "key": "k"}, headers=W)
        api.get("/v1/counters/v?key=k")
    lines = [json.loads(JsonLines().format(r)) for r in caplog.records
             if r.name == "tally.ingest.access"]
    assert [(x["method"], x["path"], x["route"], x["status"]) for x in lines] == [
        ("POST", "/v1/events", "/v1/events", 200),
        ("GET", "/v1/counters/v", "/v1/counters/<counter>", 401)]
    assert lines[0]["events"] == {"accepted": 1, "duplicates": 0, "rejected": 0}
    assert all(x["duration_ms"] >= 0 for x in lines)
