"""/docs renders every operation of /openapi.json in a real Chromium; every operation has an id."""

from __future__ import annotations

import pytest
import requests
from selenium.webdriver.support.ui import WebDriverWait

from tally.ingest.api.openapi import METHODS, document, with_operation_ids
from tests.test_api_support import gunicorn


def operations(doc: dict) -> list[dict]:
    return [item[m] for item in doc["paths"].values() for m in METHODS if m in item]


def test_every_operation_has_a_unique_operation_id():
    ids = [operation.get("operationId") for operation in operations(document())]
    assert None not in ids
    assert len(set(ids)) == len(ids)


def test_two_operations_deriving_one_id_are_refused():
    clash = {"paths": {"/v1/a/b": {"get": {}}, "/v1/a.b": {"get": {}}}}
    with pytest.raises(ValueError, match="operationId 'get_a_b'"):
        with_operation_ids(lambda: clash)()


def test_an_operation_id_given_by_hand_is_kept():
    given = {"paths": {"/v1/x": {"get": {"operationId": "readX"}, "post": {}}}}
    built = with_operation_ids(lambda: given)()["paths"]["/v1/x"]
    assert (built["get"]["operationId"], built["post"]["operationId"]) == ("readX", "post_x")


def test_docs_lists_every_operation_with_nothing_from_other_servers(redis_url, redis_client,
                                                                    tmp_path, browser):
    with gunicorn(redis_url, 1, tmp_path) as (base, _):
        spec = requests.get(base + "/openapi.json", timeout=5).json()
        expected = {f"operations-default-{op['operationId']}" for op in operations(spec)}
        browser.get(base + "/docs")
        WebDriverWait(browser, 20).until(
            lambda b: len(b.find_elements("css selector", ".opblock")) >= len(expected))
        shown = {e.get_attribute("id") for e in browser.find_elements("css selector", ".opblock")}
        assert shown == expected
        assert "Tally ingest API" in browser.find_element("css selector", ".info .title").text
        # The Content-Security-Policy allows only this server: a CDN load would be logged here.
        problems = [entry["message"] for entry in browser.get_log("browser")
                    if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]]
        assert problems == []
