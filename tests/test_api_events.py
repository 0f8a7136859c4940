"""POST /v1/events: formats, limits, strict JSON, validation and atomicity."""

from __future__ import annotations

import gzip
import json

import pytest

from tally.ingest.api import close_app
from tests.test_api_support import W, gzipped, make_app, ndjson, snapshot

EVENT = {"counter": "views", "key": "video:1", "id": "e1", "user": "u1"}


@pytest.fixture
def api(redis_url, redis_client):
    """A test client of an app with small limits (10 events, 2 KiB)."""
    app = make_app(redis_url, max_batch_events=10, max_body_bytes=2048)
    yield app.test_client()
    close_app(app)


def post(api, data, content_type="application/json", **headers):
    """POST raw bytes to /v1/events with the write token."""
    return api.post("/v1/events", data=data, headers={**W, "Content-Type": content_type,
                                                      **headers})


def total(redis_client, key="video:1") -> int:
    """All-time count of a key, read from Redis through the core."""
    from tally.ingest.counting import reads
    from tally.ingest.counting.config import CountingConfig
    return reads.total(redis_client, CountingConfig(), "views", key)


def test_array_counts_and_reports_duplicates(api, redis_client):
    events = [EVENT, {**EVENT, "id": "e2", "value": 5}, EVENT]
    response = api.post("/v1/events", json=events, headers=W)
    assert (response.status_code, response.json) == (200, {"accepted": 2, "duplicates": 1})
    assert total(redis_client) == 6


def test_single_object_is_a_batch_of_one(api, redis_client):
    assert api.post("/v1/events", json=EVENT, headers=W).json == {"accepted": 1, "duplicates": 0}
    assert total(redis_client) == 1


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/jsonl"])
def test_ndjson_with_blank_lines(api, redis_client, content_type):
    body = ndjson([EVENT, {**EVENT, "id": "e2"}]) + b"\n  \n"
    assert post(api, body, content_type).json == {"accepted": 2, "duplicates": 0}
    assert total(redis_client) == 2


def test_gzip_body(api, redis_client):
    response = post(api, gzipped(json.dumps([EVENT]).encode()), **{"Content-Encoding": "gzip"})
    assert response.json == {"accepted": 1, "duplicates": 0}


def test_retried_batch_counts_once(api, redis_client):
    batch = [{**EVENT, "id": f"e{i}"} for i in range(5)]
    assert api.post("/v1/events", json=batch, headers=W).json == {"accepted": 5, "duplicates": 0}
    assert api.post("/v1/events", json=batch, headers=W).json == {"accepted": 0, "duplicates": 5}
    assert total(redis_client) == 5


def test_invalid_batch_lists_every_problem_and_changes_nothing(api, redis_client):
    api.post("/v1/events", json=[{**EVENT, "id": "seed"}], headers=W)
    before = snapshot(redis_client)
    batch = [EVENT, {"counter": "Views", "key": ""}, {**EVENT, "value": 0, "extra": 1}, 7]
    response = api.post("/v1/events", json=batch, headers=W)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["type"] == "urn:tally:problem:validation"
    assert body["detail"] == "3 of 4 events are invalid; no event of this batch was counted"
    assert body["errors"] == [
        {"index": 1, "field": "counter", "message": "must match [a-z0-9_]{1,64}"},
        {"index": 1, "field": "key", "message": "must not be empty"},
        {"index": 2, "field": "extra", "message": "is not a known field"},
        {"index": 2, "field": "value", "message": "must be between 1 and 9007199254740991"},
        {"index": 3, "field": "", "message": "event must be a JSON object"},
    ]
    assert snapshot(redis_client) == before


def test_too_old_event_rejected_with_reason(api):
    response = api.post("/v1/events", json=[{**EVENT, "ts": 1}], headers=W)
    assert response.json["errors"] == [
        {"index": 0, "field": "ts", "message": "is older than the accepted lateness of 86400 s"}]


@pytest.mark.parametrize(("data", "slug", "detail"), [
    (b"[{\"counter\": \"views\",}]", "invalid-json",
     "body is not valid JSON: Expecting property name enclosed in double quotes at line 1 "
     "column 22"),
    (b'[{"counter": "a", "counter": "b"}]', "duplicate-key",
     "body has a JSON object with the key 'counter' more than once"),
    (b'[{"counter": "a", "value": NaN}]', "invalid-json",
     "body contains NaN, which is not valid JSON"),
    (b"[" * 1000 + b"]" * 1000, "too-deep", "body is JSON nested too deeply"),
    (b"[]", "empty-batch", "the batch is empty; send at least one event"),
    (b'"views"', "invalid-body",
     "body must be a JSON array of event objects or one event object, not a string"),
    (b' null ', "invalid-body",
     "body must be a JSON array of event objects or one event object, not null"),
    (b'[{"key": "\xff"}]', "invalid-utf8", "body is not valid UTF-8 (byte 10)"),
    (b'[{"counter": "views", "key": "a", "value": ' + b"9" * 1900 + b"}]", "invalid-body",
     "body contains an integer of 1900 digits; at most 308 are accepted"),
    (b'[{"counter": "views", "key": "a", "ts": -' + b"9" * 400 + b"}]", "invalid-body",
     "body contains an integer of 400 digits; at most 308 are accepted"),
])
def test_malformed_bodies_are_precise_400s(api, data, slug, detail):
    response = post(api, data)
    assert response.status_code == 400
    assert (response.json["type"], response.json["detail"]) == (f"urn:tally:problem:{slug}",
                                                                detail)


@pytest.mark.parametrize("separator", ["\x1e", "\u00a0", "\u2028", "\x0c"])
def test_ndjson_line_of_non_json_whitespace_is_refused(api, redis_client, separator):
    data = ndjson([EVENT]) + separator.encode() + b"\n" + ndjson([{**EVENT, "id": "e2"}])
    response = post(api, data, "application/x-ndjson")
    assert (response.status_code, response.json["type"]) == (400, "urn:tally:problem:invalid-json")
    assert response.json["detail"].startswith("line 2 is not valid JSON")
    assert total(redis_client) == 0


def test_ndjson_error_names_the_line(api):
    response = post(api, b'{"counter": "views", "key": "a"}\n{oops}\n', "application/x-ndjson")
    assert response.json["detail"].startswith("line 2 is not valid JSON: Expecting property")


def test_too_many_events_is_413(api):
    response = api.post("/v1/events", json=[EVENT] * 11, headers=W)
    assert response.status_code == 413
    assert response.json["detail"] == "the batch has more than 10 events; the limit is 10"


def test_body_over_limit_is_413(api):
    response = post(api, b"[" + b" " * 3000 + b"]")
    assert response.status_code == 413
    assert response.json["detail"] == "body of 3002 bytes exceeds the limit of 2048 bytes"


def test_gzip_bomb_is_413_on_decompressed_size(api):
    bomb = gzip.compress(b"[" + b" " * 1_500_000 + b"]")
    assert len(bomb) < 2048
    response = post(api, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.json["detail"] == "decompressed body exceeds the limit of 2048 bytes"


def test_corrupt_gzip_is_400(api):
    response = post(api, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json["type"] == "urn:tally:problem:invalid-gzip"


@pytest.mark.parametrize(("headers", "detail_start"), [
    ({"Content-Type": "text/plain"}, "Content-Type 'text/plain' is not accepted here"),
    ({"Content-Type": "application/json; charset=latin-1"}, "Content-Type 'application/json;"),
    ({"Content-Type": "application/json", "Content-Encoding": "br"},
     "Content-Encoding 'br' is not supported"),
])
def test_unsupported_media_is_415(api, headers, detail_start):
    response = api.post("/v1/events", data=b"[]", headers={**W, **headers})
    assert response.status_code == 415
    assert response.json["detail"].startswith(detail_start)


def test_missing_content_type_is_415(api):
    response = api.post("/v1/events", data=b"[]", headers=W)
    assert response.status_code == 415


def test_batch_that_would_overflow_a_count_is_a_422_and_changes_nothing(api, redis_client):
    huge = {"counter": "views", "key": "k", "value": 2**53 - 1}
    for _ in range(102):  # 1,020 x (2^53 - 1) is just under 9.2e18
        assert api.post("/v1/events", json=[huge] * 10, headers=W).status_code == 200
    before = snapshot(redis_client)
    response = api.post("/v1/events", json=[huge] * 10, headers=W)
    assert response.status_code == 422
    assert response.json["type"].endswith("count-overflow")
    assert "all-time total of key k would pass 9.2e18" in response.json["detail"]
    assert snapshot(redis_client) == before


@pytest.mark.parametrize(("field", "message"), [
    ("id", "must not be null; leave the field out for an event without id"),
    ("user", "must not be null; leave the field out for an event without user"),
    ("value", "must not be null; leave the field out for the value 1"),
    ("ts", "must not be null; leave the field out for the time of arrival"),
    ("counter", "must not be null"),
    ("key", "must not be null"),
])
def test_a_null_field_is_refused_naming_it(api, redis_client, field, message):
    """"id": null counted a retried event once per retry, as if it had no id."""
    event = {"counter": "views", "key": "video:1", "id": "n1", field: None}
    for _ in range(3):
        response = api.post("/v1/events", json=[event], headers=W)
        assert response.status_code == 400
        assert response.json["errors"] == [{"index": 0, "field": field, "message": message}]
    assert snapshot(redis_client) == {}


@pytest.mark.parametrize("key", ["\U0001FAE8", "shaking face \U0001FAE8", "\U0001FADF x",
                                 "\U0001FAE9"])
def test_emoji_of_recent_unicode_versions_are_printable(api, redis_client, key):
    """U+1FAE8 (Unicode 15) and U+1FAE9, U+1FADF (Unicode 16) were refused as unprintable."""
    response = api.post("/v1/events", json=[{"counter": "views", "key": key, "user": key,
                                             "id": key}], headers=W)
    assert response.json == {"accepted": 1, "duplicates": 0}
    assert total(redis_client, key) == 1


@pytest.mark.parametrize("key", ["a\u0378", "\U000E0001", "a\u2028b", "\u00ad", "\U0010FFFF"])
def test_unassigned_and_format_characters_stay_unprintable(api, key):
    response = api.post("/v1/events", json=[{"counter": "views", "key": key}], headers=W)
    assert response.json["errors"] == [
        {"index": 0, "field": "key", "message": "must be printable UTF-8 (no control characters)"}]
